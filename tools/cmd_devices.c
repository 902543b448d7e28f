/* cherryq devices: every backend built in (or not), its devices, memory and
 * features. */
#include <stdlib.h>

#include "cli.h"

int cmd_devices(int argc, char **argv)
{
    cli_flag fl[1] = { { "json", CLI_BOOL, NULL, NULL } };
    bool json = false;
    fl[0].dst = &json;
    fl[0].help = "print one JSON object per device";
    int r = cli_parse("devices", "[--json]", "Lists the compute backends and their devices.", fl, 1, argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    int nb = cq_backend_count();
    for (int i = 0; i < nb; i++) {
        cq_backend_info info;
        memset(&info, 0, sizeof info);
        if (cq_backend_probe(i, &info)) continue;
        if (!json) {
            printf("%s: ", info.name);
            if (!info.built) printf("not built (%s)\n", info.reason[0] ? info.reason : "disabled at build time");
            else if (info.n_devices == 0) printf("built, no usable device (%s)\n", info.reason);
            else printf("%d device%s\n", info.n_devices, info.n_devices == 1 ? "" : "s");
        }
        if (!info.built || info.n_devices == 0) {
            if (json)
                printf("{\"backend\": \"%s\", \"built\": %s, \"devices\": 0}\n", info.name, info.built ? "true" : "false");
            continue;
        }
        cq_device_info devs[16];
        int nd = cq_backend_devices(info.name, devs, 16);
        for (int d = 0; d < nd && d < 16; d++) {
            if (json) {
                printf("{\"backend\": \"%s\", \"built\": true, \"device\": %d, \"name\": \"", info.name, d);
                for (const char *s = devs[d].name; *s; s++)
                    if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20) putchar(*s);
                printf("\", \"mem_total\": %zu}\n", devs[d].mem_total);
            } else {
                printf("  [%d] %s", d, devs[d].name);
                if (devs[d].mem_total) printf(", %.1f GiB", (double)devs[d].mem_total / (1024.0 * 1024 * 1024));
                printf("\n");
                if (devs[d].features[0]) printf("      %s\n", devs[d].features);
            }
        }
    }
    return CQ_EXIT_OK;
}
