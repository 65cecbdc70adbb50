/* flas.conf(5), the SPANK plugin's configuration, parsed as root in every Slurm process that loads
 * flas.so: flas_conf_parse (spank/conf.c over runtime/common/kv.c), exactly what flas_conf_load runs on
 * the file's text, then the lookups and the admission check the plugin makes with what it parsed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/conf.h"
#include "flas/names.h"
#include "support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* flas_kv_read_file refuses a file holding a NUL byte (or over 1 MiB): such text never reaches the parser */
    if (memchr(data, '\0', size) || size > (1u << 20))
        return -1;
    char *text = fz_strndup(data, size);
    flas_conf conf;
    char err[1024];
    err[0] = '\0';
    if (flas_conf_parse("/etc/slurm/flas.conf", text, &conf, err, sizeof err) == 0) {
        if (conf.n < 1 || !conf.fed)
            fz_fail("flas_conf_parse accepted a file with %d federations", conf.n);
        for (int i = 0; i < conf.n; i++) {
            const flas_federation_conf *f = &conf.fed[i];
            /* what the parser promises: valid names, an absolute path, lists within bounds */
            if (!flas_name_valid(f->name) || !flas_name_valid(f->site) || f->staging_root[0] != '/')
                fz_fail("federation %d accepted with name '%s', site '%s', root '%s'", i, f->name, f->site,
                        f->staging_root);
            if (flas_conf_find(&conf, f->name) != f)
                fz_fail("federation '%s' is not found as itself (defined twice?)", f->name);
            const flas_name_list *lists[3] = {&f->allow_users, &f->allow_groups, &f->allow_accounts};
            for (int l = 0; l < 3; l++) {
                if (lists[l]->n < 0 || lists[l]->n > FLAS_CONF_LIST_MAX)
                    fz_fail("list of %d names", lists[l]->n);
                for (int k = 0; k < lists[l]->n; k++)
                    if (!flas_name_valid(lists[l]->name[k]) && strcmp(lists[l]->name[k], "*"))
                        fz_fail("list entry '%s' accepted", lists[l]->name[k]);
            }
            char why[512];
            gid_t groups[1] = {getgid()};
            flas_conf_allows(f, "alice", getgid(), groups, 1, "physics", why, sizeof why);
            flas_conf_allows(f, f->allow_users.n ? f->allow_users.name[0] : "bob", 0, NULL, 0, NULL, why, sizeof why);
        }
        flas_conf_find(&conf, "no-such-federation");
        flas_conf_free(&conf);
    } else if (!err[0] || conf.fed || conf.n) {
        fz_fail("refused without a reason or with records left: '%s'", err);
    }
    free(text);
    return 0;
}
