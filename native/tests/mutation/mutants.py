# The fixed list of mutants that native/tests/mutation/mutate.py applies to native/cuda, one at a time.
# Each is a bug a GPU programmer plausibly writes: `orig` must occur exactly once in `file` (else the run stops, so
# that an edit to a kernel cannot leave a mutant silently pointing at nothing), `repl` replaces it.
# launch.cuh (declarations) and common.cuh (macros; its nvcc branch is not compiled here) hold no kernel code to
# mutate; backend.cu is host housekeeping (error slot, device checks), not a kernel.
# New kernels (the tensor-core ones) add their mutants here, with the same care: chosen as likely bugs, not as
# bugs the tests happen to catch.

MUTANTS = [
    # ---- reduce.cuh: every row reduction of kl_div, cross_entropy, layernorm goes through these.
    dict(id="reduce-shfl-offset", file="reduce.cuh", cls="wrong shuffle offset",
         why="the butterfly starts at 8: each half-warp reduces alone (written for 16-lane groups, reused for 32)",
         orig="__device__ __forceinline__ float group_sum(float v, float *scratch) {\n"
              "    for (int o = 16; o > 0; o >>= 1)",
         repl="__device__ __forceinline__ float group_sum(float v, float *scratch) {\n"
              "    for (int o = 8; o > 0; o >>= 1)"),
    dict(id="reduce-sum-first-sync", file="reduce.cuh", cls="dropped __syncthreads",
         why="the barrier before reusing scratch looks redundant: back-to-back reductions then race on it",
         orig="        __syncthreads();  // the previous reduction's readers are done with scratch\n",
         repl=""),
    dict(id="reduce-partials-bound", file="reduce.cuh", cls="off-by-one bound",
         why="<= for < on the number of warp partials: one unwritten shared slot joins the sum",
         orig="v = lane < GROUP / 32 ? scratch[lane] : 0.0f;",
         repl="v = lane <= GROUP / 32 ? scratch[lane] : 0.0f;"),
    dict(id="reduce-merge-rescale", file="reduce.cuh", cls="missing scale factor",
         why="merging two running softmax sums, the second is not rescaled to the common maximum",
         orig="return {m, a.d * expf(a.m - m) + b.d * expf(b.m - m)};",
         repl="return {m, a.d * expf(a.m - m) + b.d};"),

    # ---- layernorm.cu
    dict(id="ln-bwd-partial-unzeroed", file="layernorm.cu", cls="unzeroed accumulator",
         why="the per-warp workspace slice is accumulated into without being zeroed first",
         orig="    for (int64_t i = lane; i < C; i += 32) pw[i] = 0.0f, pb[i] = 0.0f;\n",
         repl=""),
    dict(id="ln-bwd-dw-assign", file="layernorm.cu", cls="unzeroed accumulator / = for +=",
         why="the dweight partial is written, not accumulated: right while a warp has one row (M <= 1024)",
         orig="pw[i] = fmaf(d, xhat, pw[i]);",
         repl="pw[i] = d * xhat;"),
    dict(id="ln-bwd-mgx-scale", file="layernorm.cu", cls="missing scale factor",
         why="mean(g xhat) taken as the sum: the 1/C is forgotten on one of the two means",
         orig="mgx = group_sum<32>(sgx, nullptr) * inv_c;",
         repl="mgx = group_sum<32>(sgx, nullptr);"),
    dict(id="ln-params-bound", file="layernorm.cu", cls="off-by-one bound",
         why="> for >= on the 2C columns of the parameter-gradient kernel",
         orig="if (j >= 2 * C) return;",
         repl="if (j > 2 * C) return;"),

    # ---- kl_div.cu
    dict(id="kl-logtarget-qsum", file="kl_div.cu", cls="wrong assumption (normalised input)",
         why="log-targets assumed to be normalised log-probabilities: sum q = 1",
         orig="const float q_sum = LOG_TARGET ? ot.d * expf(ot.m) : 1.0f;",
         repl="const float q_sum = 1.0f;"),
    dict(id="kl-row-bound", file="kl_div.cu", cls="removed bounds check",
         why="the row guard dropped: the grid is a multiple of 8 rows, B need not be",
         orig="    if (row >= a.B) return;  // whole warps leave together (warp-per-row only: the block grid is exact)"
              "\n",
         repl=""),
    dict(id="kl-reduce-one-pass", file="kl_div.cu", cls="one-block reduce, B <= blockDim",
         why="each thread of the one-block reduce takes one row: right up to 256 rows",
         orig="for (int64_t i = threadIdx.x; i < B; i += blockDim.x) v += row_loss[i];\n"
              "    v = group_sum<256>(v, scratch);\n"
              "    if (threadIdx.x == 0) *loss = v * norm;",
         repl="if (threadIdx.x < B) v = row_loss[threadIdx.x];\n    v = group_sum<256>(v, scratch);\n"
              "    if (threadIdx.x == 0) *loss = v * norm;"),
    dict(id="kl-vec4-grad-alignment", file="kl_div.cu", cls="misaligned vector path",
         why="the float4 path checks the inputs' alignment but not the gradient's",
         orig="aligned16(teacher) && (grad == nullptr || aligned16(grad));",
         repl="aligned16(teacher);"),

    # ---- cross_entropy.cu
    dict(id="ce-smoothing-denominator", file="cross_entropy.cu", cls="wrong denominator",
         why="label smoothing spread over the C - 1 other classes instead of all C",
         orig="off = eps / static_cast<float>(C), hit",
         repl="off = eps / static_cast<float>(C > 1 ? C - 1 : 1), hit"),
    dict(id="ce-label-bound", file="cross_entropy.cu", cls="off-by-one bound",
         why="<= for < when validating the label against C",
         orig="yf < static_cast<float>(C)",
         repl="yf <= static_cast<float>(C)"),
    dict(id="ce-vec4-lane-index", file="cross_entropy.cu", cls="swapped indices",
         why="copy-paste in the unrolled float4 body: the second component keeps the first one's class index",
         orig="gv.y = term(4 * i + 1, v.y);",
         repl="gv.y = term(4 * i, v.y);"),
    dict(id="ce-smoothing-unshifted", file="cross_entropy.cu", cls="cancellation (max applied late)",
         why="the smoothing sum adds raw logits and takes C * max off afterwards: at |x| ~ 1e5 no digits are left",
         edits=[("shifted += d;", "shifted += v;"),
                ("loss += eps * (log_d - shifted / static_cast<float>(C));",
                 "loss += eps * (log_d - (shifted / static_cast<float>(C) - o.m));")]),
    dict(id="ce-soft-total-assumed-one", file="cross_entropy.cu", cls="wrong assumption (normalised)",
         why="the gradient takes softmax - t', as if every target row summed to 1 (PyTorch does not require it)",
         orig="a.k * (total * expf(d - log_d) - tp)",
         repl="a.k * (expf(d - log_d) - tp)"),
    dict(id="ce-soft-total-unsmoothed", file="cross_entropy.cu", cls="missing term",
         why="the target total sums the raw targets, forgetting that smoothing rescales them and adds eps/C each",
         orig="total += hit * t[i] + off;",
         repl="total += t[i];"),
    dict(id="ce-soft-total-unreduced", file="cross_entropy.cu", cls="missing reduction",
         why="each lane's partial target sum is used as the row's (the max/sum reduction above it looks like enough)",
         orig="    total = group_sum<GROUP>(total, scratch);\n",
         repl=""),
    dict(id="ce-soft-loss-unshifted", file="cross_entropy.cu", cls="cancellation (max applied late)",
         why="-log p written as log_d + max - x: at |x| ~ 1e5 the sum rounds away the digits of log_d",
         orig="loss += tp * (log_d - d);",
         repl="loss += tp * (log_d + o.m - x[i]);"),
    dict(id="ce-soft-target-stride", file="cross_entropy.cu", cls="wrong stride",
         why="the target row found as the label was, one value per row: every row reads a window of row 0's targets",
         orig="*t = a.labels + row * C;",
         repl="*t = a.labels + row;"),
    dict(id="ce-argmax-mask", file="cross_entropy.cu", cls="wrong shuffle mask",
         why="a half-warp mask on the index exchange (copied from a 16-lane reduction)",
         orig="const int ib = __shfl_xor_sync(kFullMask, at, o);",
         repl="const int ib = __shfl_xor_sync(0x0000ffffu, at, o);"),

    # ---- attention.cu
    dict(id="attn-fwd-syncwarp", file="attention.cu", cls="dropped __syncwarp",
         why="the warp reads back P it just wrote to shared memory without __syncwarp (looks warp-synchronous)",
         orig="        __syncwarp();  // the rows of sP this warp reads below were written by this warp only\n",
         repl=""),
    dict(id="attn-fwd-max-offset", file="attention.cu", cls="wrong shuffle offset",
         why="the row maximum is shuffled over 4 of the 8 lanes that share a row",
         orig="for (int off = 1; off < 8; off <<= 1) mt = fmaxf(mt, __shfl_xor_sync(kFullMask, mt, off));",
         repl="for (int off = 1; off < 4; off <<= 1) mt = fmaxf(mt, __shfl_xor_sync(kFullMask, mt, off));"),
    dict(id="attn-fwd-key-mask", file="attention.cu", cls="off-by-one tail",
         why="> for >= when masking keys past N in the last tile: one zero key joins the softmax",
         orig="if (k0 + tc + 8 * j >= g.N)",
         repl="if (k0 + tc + 8 * j > g.N)"),
    dict(id="attn-bwd-phase1-sync", file="attention.cu", cls="dropped __syncthreads",
         why="phase 2 reads sP/sdS written by other warps in phase 1 without the barrier between",
         orig="        __syncthreads();\n\n        // Phase 2",
         repl="\n        // Phase 2"),
    dict(id="attn-stage-bound", file="attention.cu", cls="off-by-one bound",
         why="<= for < on the valid rows of a staged tile: one row past N is loaded",
         orig="if (r < valid) v = f4(src + r * stride + c);",
         repl="if (r <= valid) v = f4(src + r * stride + c);"),
    dict(id="attn-delta-layout", file="attention.cu", cls="swapped indices",
         why="D stored head-major, [h][b][n], where attn_bwd reads [b][h][n]",
         orig="delta[(bn / g.N * g.H + h) * g.N + bn % g.N] = v;",
         repl="delta[(h * g.B + bn / g.N) * g.N + bn % g.N] = v;"),

    # ---- patch_embed.cu
    dict(id="pe-gemm-loop-sync", file="patch_embed.cu", cls="dropped __syncthreads",
         why="the end-of-slice barrier dropped: double buffering seems to make it unnecessary",
         orig="        // and every thread is done reading `cur` before the next iteration's stash overwrites it.\n"
              "        __syncthreads();\n",
         repl="        // and every thread is done reading `cur` before the next iteration's stash overwrites it.\n"),
    dict(id="pe-col-advance", file="patch_embed.cu", cls="wrong carry (if for while)",
         why="the column cursor carries kx once per step, fine while the step (16) is at most P",
         orig="while (kx >= P) kx -= P, ky += 1;",
         repl="if (kx >= P) kx -= P, ky += 1;"),
    dict(id="pe-dw-chunk-end", file="patch_embed.cu", cls="removed bounds check",
         why="the last dweight chunk is not clamped to M",
         orig="m_end = min(g.M, m_begin + chunk);",
         repl="m_end = m_begin + chunk;"),
    dict(id="pe-fwd-vec4-alignment", file="patch_embed.cu", cls="misaligned vector path",
         why="the float4 epilogue checks tokens and bias but not the position embedding",
         orig="aligned16(tokens) && aligned16(bias) && aligned16(pos);",
         repl="aligned16(tokens) && aligned16(bias);"),

    # ---- gelu.cu
    dict(id="gelu-grid-stride", file="gelu.cu", cls="missing grid-stride loop",
         why="one element per thread, but the grid is capped (4096 blocks; 8 emulated)",
         orig="__global__ void __launch_bounds__(kThreads) gelu_fwd(const float *x, int64_t n, float *y) {\n"
              "    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;\n"
              "         i += static_cast<int64_t>(gridDim.x) * kThreads) {",
         repl="__global__ void __launch_bounds__(kThreads) gelu_fwd(const float *x, int64_t n, float *y) {\n"
              "    if (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n) {"),
    dict(id="gelu-clamp", file="gelu.cu", cls="removed clamp",
         why="x used unclamped: x^2 overflows to inf for |x| > 1.8e19 and lo = inf - inf is NaN",
         orig="const float x = fminf(fmaxf(x_in, -20.0f), 20.0f);",
         repl="const float x = x_in;"),

    # ---- token_rows.cu
    dict(id="tr-gather-index", file="token_rows.cu", cls="swapped indices",
         why="b and p swapped in the token index",
         orig="rows[i] = tokens[(b * T + p) * D + d];",
         repl="rows[i] = tokens[(p * T + b) * D + d];"),

    # ---- adamw.cu
    dict(id="adamw-vec4-tail", file="adamw.cu", cls="off-by-one tail",
         why="the scalar tail starts at n / 4, not at the first element the float4 loop left",
         orig="i = n / 4 * 4;",
         repl="i = n / 4;"),
    dict(id="adamw-tree-sync", file="adamw.cu", cls="dropped __syncthreads",
         why="the barrier inside the shared-memory tree reduction dropped",
         orig="    for (int s = kSumThreads / 2; s > 0; s >>= 1) {\n        __syncthreads();\n",
         repl="    for (int s = kSumThreads / 2; s > 0; s >>= 1) {\n"),

    # ---- linear.cu
    dict(id="lin-bias-grad-sync", file="linear.cu", cls="dropped __syncthreads",
         why="group 0 sums the other groups' partials without the barrier",
         orig="    partial[group][lane] = acc;\n    __syncthreads();\n",
         repl="    partial[group][lane] = acc;\n"),
    dict(id="lin-bias-grad-bound", file="linear.cu", cls="removed bounds check",
         why="the column guard dropped on the final store: N need not be a multiple of 32",
         orig="if (group == 0 && n < N) {",
         repl="if (group == 0) {"),
]