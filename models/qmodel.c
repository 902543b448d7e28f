/* cherryq: the quantized model directory (packed linear weights).
 * Layout: docs/format.md. */
#include <stdio.h>
#include <stdlib.h>

#include "cq_io.h"
#include "llama.h"
#include "safetensors.h"

int cq_qmodel_load_packed(cq_llama *m, const cq_st_set *st, const char *dir);
int cq_qmodel_is_quantized(const char *dir);

int cq_qmodel_is_quantized(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *txt = NULL;
    if (cq_read_file(path, &txt, NULL, 16u << 20)) return 0;
    int q = strstr(txt, "\"quantization_config\"") != NULL;
    free(txt);
    return q;
}

int cq_qmodel_load_packed(cq_llama *m, const cq_st_set *st, const char *dir)
{
    (void)m;
    (void)st;
    cq_error("%s: loading quantized model directories is not implemented yet", dir);
    return CQ_ENOTSUP;
}
