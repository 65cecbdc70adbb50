/* flas.so: the SPANK plugin behind `--federation=NAME`.
 * This first version registers the option, validates the name and exports FLAS_FEDERATION to the
 * job's tasks. flas.conf, rounds, prolog/epilog publishing arrive with the full plugin. */
#include <slurm/spank.h>
#include <string.h>

SPANK_PLUGIN(flas, 1);

static char federation[64];

static int name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= sizeof federation || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int on_federation(int val, const char *optarg, int remote)
{
    (void)val;
    (void)remote;
    if (!name_ok(optarg)) {
        slurm_error("flas: --federation: '%s' is not a valid name ([A-Za-z0-9_-], not starting with '-')",
                    optarg ? optarg : "");
        return -1;
    }
    strcpy(federation, optarg);
    return 0;
}

static struct spank_option federation_option = {
    "federation", "NAME", "Join federated-learning federation NAME (FLaS; not Slurm cluster federation)",
    1, 0, on_federation};

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    (void)ac;
    (void)av;
    spank_context_t ctx = spank_context();
    if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE)
        return spank_option_register(sp, &federation_option) == ESPANK_SUCCESS ? 0 : -1;
    return 0;
}

int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
    (void)ac;
    (void)av;
    if (federation[0] && spank_setenv(sp, "FLAS_FEDERATION", federation, 1) != ESPANK_SUCCESS)
        return -1;
    return 0;
}
