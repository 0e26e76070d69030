// Teacher-forced run of the oracle's libllama (tests/oracle/repack_spread.py builds and runs it): the
// prompt as one batch, then the given continuation one token at a time; prints per step the
// argmax id, its logprob, the forced token's logprob and the top-2 margin.
#include "llama.h"
#include "ggml-backend.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
static int parse(const char *s, llama_token *out) {
    int n = 0; char *d = strdup(s), *t = strtok(d, ",");
    while (t) { out[n++] = atoi(t); t = strtok(NULL, ","); }
    free(d); return n;
}
int main(int argc, char **argv) {
    ggml_backend_load_all_from_path(argv[1]);
    llama_backend_init();
    llama_log_set(NULL, NULL);
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = atoi(argv[3]) != 0;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512; cp.n_batch = 512; cp.n_ubatch = 512;
    cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    static llama_token p[4096], f[4096];
    int np = parse(argv[4], p), nf = parse(argv[5], f);
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (llama_decode(ctx, llama_batch_get_one(p, np))) return 1;
    for (int i = 0; i < nf; i++) {
        const float *lg = llama_get_logits_ith(ctx, -1);
        int a = 0, b = -1;
        for (int j = 1; j < nv; j++) if (lg[j] > lg[a]) a = j;
        for (int j = 0; j < nv; j++) if (j != a && (b < 0 || lg[j] > lg[b])) b = j;
        double mx = lg[a], s = 0; for (int j = 0; j < nv; j++) s += exp(lg[j] - mx);
        double lse = mx + log(s);
        printf("%d %d %.5f %.5f %.5f\n", i, a, lg[a] - lse, lg[f[i]] - lse, lg[a] - lg[b]);
        if (llama_decode(ctx, llama_batch_get_one(&f[i], 1))) return 1;
    }
    return 0;
}
