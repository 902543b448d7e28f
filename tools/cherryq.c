/* cherryq: the command-line tool. Dispatches on the subcommand through the
 * table built from CQ_COMMANDS (tools/cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cq_config.h"

#define CQ_TABLE_ENTRY(id, name, summary) { name, cmd_##id, summary },
static const cq_cmd commands[] = { CQ_COMMANDS(CQ_TABLE_ENTRY) };
#undef CQ_TABLE_ENTRY

static void usage(FILE *f)
{
    fprintf(f, "usage: cherryq <command> [options]   (cherryq <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

/* The CPU kernels use OpenMP next to OpenBLAS's own pthreads. libgomp's
 * default spin-waiting makes the two pools fight over the cores (training
 * ran 2-3x slower on 2 cores). libgomp reads OMP_WAIT_POLICY when it loads,
 * before main, so when the user has not chosen a policy we set "passive" and
 * re-execute ourselves once. */
static void set_omp_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("CQ_NO_REEXEC")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("CQ_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: go on with the default policy */
}

int main(int argc, char **argv)
{
    set_omp_wait_policy(argv);
    if (argc < 2) {
        usage(stderr);
        return CQ_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return CQ_EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("cherryq %s\n", CQ_VERSION);
        return CQ_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "cherryq: unknown command '%s'\n", cmd);
    usage(stderr);
    return CQ_EXIT_USAGE;
}
