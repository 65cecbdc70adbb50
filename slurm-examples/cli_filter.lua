--[[
FLaS cli_filter example: jobs submitted by hand with --federation-round=N land in that round's
advance reservation, so they start together with the other sites' jobs of the same round.

Install: CliFilterPlugins=cli_filter/lua in slurm.conf, and this file as cli_filter.lua in the directory
of slurm.conf. Reservations are made by root or SlurmUser for each round, named
"flas-<federation>-r<round>" (see docs/operations.md, "Reservations"):

  scontrol create reservation ReservationName=flas-flas-r3 StartTime=2026-12-01T09:00 \
      Duration=02:00:00 Users=alice NodeCnt=2

A reservation the user named explicitly (--reservation) is never changed, and a round without a
reservation at this site is left alone (the job then queues normally).
]]

local function reservation_exists(name)
    local p = io.popen("scontrol show reservation " .. name .. " 2>/dev/null")
    if p == nil then
        return false
    end
    local out = p:read("*a")
    p:close()
    return string.find(out, "ReservationName=" .. name, 1, true) ~= nil
end

function slurm_cli_setup_defaults(options, early_pass)
    return slurm.SUCCESS
end

function slurm_cli_pre_submit(options, pack_offset)
    local flas = options["spank"] and options["spank"]["flas"]
    if flas == nil or options["reservation"] ~= nil then
        return slurm.SUCCESS
    end
    local fed, round = flas["federation"], flas["federation-round"]
    -- the SPANK plugin has already validated both (names [A-Za-z0-9_-], rounds digits only)
    if fed == nil or round == nil or not string.match(fed, "^[%w_-]+$") or not string.match(round, "^%d+$") then
        return slurm.SUCCESS
    end
    local name = string.format("flas-%s-r%d", fed, tonumber(round))
    if reservation_exists(name) then
        options["reservation"] = name
        slurm.log_verbose("flas: round %s of %s runs in reservation %s", round, fed, name)
    end
    return slurm.SUCCESS
end

function slurm_cli_post_submit(offset, job_id, step_id)
    return slurm.SUCCESS
end
