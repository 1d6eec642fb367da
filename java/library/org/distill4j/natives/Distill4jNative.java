package org.distill4j.natives;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Opaque;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP peer of {@code native/include/distill4j.h}: the dispatch library, one native method per C entry.
 * Everything else (argument checks, memory ownership) lives in {@code org.distill4j.backend} and
 * {@code org.distill4j.ops}; this class only mirrors the header.
 *
 * <p>libgomp is preloaded from the natives jar when it is there, so the CPU kernels' dependency resolves by soname
 * on machines without gcc's runtime.
 */
@Platform(include = "distill4j.h", link = "distill4j", preload = "gomp@.1")
public final class Distill4jNative {
    static {
        Loader.load();
    }

    private Distill4jNative() {}

    /** {@code d4j_backend}: an opened implementation library and its function table. */
    @Opaque
    public static final class d4j_backend extends Pointer {
        /** Empty handle (null pointer). */
        public d4j_backend() {
            super((Pointer) null);
        }

        /** Wraps a native pointer. */
        public d4j_backend(Pointer p) {
            super(p);
        }
    }

    /** Opens the implementation library at {@code implPath} for {@code device}; null with the reason in err. */
    public static native d4j_backend d4j_backend_open(String implPath, int device, @Cast("char*") BytePointer err,
                                                      int errlen);

    /** Releases the handle (the library itself stays mapped, see distill4j.cpp). */
    public static native void d4j_backend_close(d4j_backend backend);

    /** Message of the last failed call through this backend on this thread. */
    public static native @Cast("const char*") BytePointer d4j_backend_last_error(d4j_backend backend);

    /** Waits for the work queued on {@code stream}. */
    public static native int d4j_synchronize(d4j_backend backend, Pointer stream);

    /** The most threads the backend's host kernels run with (1 for a backend that has none). */
    public static native int d4j_backend_threads(d4j_backend backend);

    /** dlopen()s {@code name} globally: 0 when found, else -1 and dlerror()'s text in err. */
    public static native int d4j_probe_library(String name, @Cast("char*") BytePointer err, int errlen);

    /** 64-byte aligned host memory (cpu and cuda-emu tensors). */
    public static native Pointer d4j_host_alloc(@Cast("size_t") long bytes);

    /** Frees memory from {@link #d4j_host_alloc}. */
    public static native void d4j_host_free(Pointer ptr);

    /**
     * Makes the backend's device current on the calling thread, for the caller's own CUDA runtime calls (the
     * kernel calls below do it themselves); 0, or nonzero with {@link #d4j_backend_last_error}'s message.
     */
    public static native int d4j_backend_use_device(d4j_backend backend);

    /**
     * Memory of a host-memory backend (cpu, cuda-emu): the implementation's allocator on the backend's device when
     * it has one (cuda-emu: the emulator's, which tags it with the device), else {@link #d4j_host_alloc}; null
     * when out of memory.
     */
    public static native Pointer d4j_backend_alloc(d4j_backend backend, @Cast("size_t") long bytes);

    /** Frees memory from {@link #d4j_backend_alloc}; nonzero for a pointer it did not return. */
    public static native int d4j_backend_free(d4j_backend backend, Pointer ptr);

    /** 1 when the backend has streams and CUDA graphs (cuda, cuda-emu), 0 when not (cpu). */
    public static native int d4j_backend_has_streams(d4j_backend backend);

    /** Creates a stream of the backend's device into {@code stream[0]}: see {@code d4j_impl_stream_create}. */
    public static native int d4j_stream_create(d4j_backend backend, @Cast("void**") PointerPointer stream);

    /** Destroys a stream from {@link #d4j_stream_create}. */
    public static native int d4j_stream_destroy(d4j_backend backend, Pointer stream);

    /** Queues the zeroing of {@code bytes} at {@code ptr} on {@code stream}. */
    public static native int d4j_zero_async(d4j_backend backend, Pointer stream, Pointer ptr,
                                            @Cast("size_t") long bytes);

    /** Queues a copy of {@code bytes} from {@code src} to {@code dst} on {@code stream} (either side host or device). */
    public static native int d4j_copy_async(d4j_backend backend, Pointer stream, Pointer dst, @Const Pointer src,
                                            @Cast("size_t") long bytes);

    /** Starts capturing {@code stream} into a CUDA graph: see {@code d4j_impl_graph_begin}. */
    public static native int d4j_graph_begin(d4j_backend backend, Pointer stream);

    /** Ends the capture; the instantiated graph in {@code graph[0]}, or a failure when the capture was broken. */
    public static native int d4j_graph_end(d4j_backend backend, Pointer stream, @Cast("void**") PointerPointer graph);

    /** Replays a graph from {@link #d4j_graph_end} on {@code stream}. */
    public static native int d4j_graph_launch(d4j_backend backend, Pointer stream, Pointer graph);

    /** Frees a graph from {@link #d4j_graph_end}. */
    public static native int d4j_graph_destroy(d4j_backend backend, Pointer graph);

    /** Fused log_softmax + KL divergence: see {@code d4j_impl_kl_div} in native/include/distill4j_impl.h. */
    public static native int d4j_kl_div(d4j_backend backend, Pointer stream, @Const FloatPointer student,
                                        @Const FloatPointer teacher, @Cast("int64_t") long batch,
                                        @Cast("int64_t") long classes, float temperature, int reduction,
                                        int logTarget, float lossScale, @Const FloatPointer gradOut,
                                        FloatPointer rowLoss, FloatPointer loss, FloatPointer grad);

    /** Workspace bytes the patch-embedding kernels of this backend need: see distill4j_impl.h. */
    public static native @Cast("int64_t") long d4j_patch_embed_workspace(d4j_backend backend, @Cast("int64_t") long b,
                                                                        @Cast("int64_t") long cin, @Cast("int64_t") long h,
                                                                        @Cast("int64_t") long w, @Cast("int64_t") long p,
                                                                        @Cast("int64_t") long d);

    /** Patch embedding forward (conv + bias + position + placement after cls/dist): see distill4j_impl.h. */
    public static native int d4j_patch_embed_forward(d4j_backend backend, Pointer stream, @Const FloatPointer images,
                                                     @Cast("int64_t") long b, @Cast("int64_t") long cin,
                                                     @Cast("int64_t") long h, @Cast("int64_t") long w,
                                                     @Cast("int64_t") long p, @Cast("int64_t") long d,
                                                     @Const FloatPointer weight, @Const FloatPointer bias,
                                                     @Const FloatPointer pos, @Const FloatPointer cls,
                                                     @Const FloatPointer dist, FloatPointer tokens, Pointer workspace);

    /** Patch embedding backward: parameter gradients accumulate, dimages (nullable) is written. */
    public static native int d4j_patch_embed_backward(d4j_backend backend, Pointer stream, @Const FloatPointer images,
                                                      @Cast("int64_t") long b, @Cast("int64_t") long cin,
                                                      @Cast("int64_t") long h, @Cast("int64_t") long w,
                                                      @Cast("int64_t") long p, @Cast("int64_t") long d,
                                                      @Const FloatPointer weight, @Const FloatPointer dtokens,
                                                      FloatPointer dweight, FloatPointer dbias, FloatPointer dpos,
                                                      FloatPointer dcls, FloatPointer ddist, FloatPointer dimages,
                                                      Pointer workspace);

    /** Workspace bytes the attention kernels of this backend need: see distill4j_impl.h. */
    public static native @Cast("int64_t") long d4j_attention_workspace(d4j_backend backend, @Cast("int64_t") long b,
                                                                      @Cast("int64_t") long n, @Cast("int64_t") long h,
                                                                      @Cast("int64_t") long dh);

    /** Attention forward (FlashAttention-2 style): out [B, N, H*Dh] and lse [B, H, N] from qkv [B, N, 3, H, Dh]. */
    public static native int d4j_attention_forward(d4j_backend backend, Pointer stream, @Const FloatPointer qkv,
                                                   @Cast("int64_t") long b, @Cast("int64_t") long n,
                                                   @Cast("int64_t") long h, @Cast("int64_t") long dh, float scale,
                                                   FloatPointer out, FloatPointer lse, Pointer workspace);

    /** Attention backward: dqkv (written) from dout, with the forward's qkv, out and lse. */
    public static native int d4j_attention_backward(d4j_backend backend, Pointer stream, @Const FloatPointer qkv,
                                                    @Const FloatPointer out, @Const FloatPointer lse,
                                                    @Const FloatPointer dout, @Cast("int64_t") long b,
                                                    @Cast("int64_t") long n, @Cast("int64_t") long h,
                                                    @Cast("int64_t") long dh, float scale, FloatPointer dqkv,
                                                    Pointer workspace);

    // ---- bf16 (issue #18): bf16 values as their 16 bits in a ShortPointer (uint16_t in C).

    /** See {@code d4j_impl_cast_bf16} in native/include/distill4j_impl.h: y = bf16(x), round to nearest even. */
    public static native int d4j_cast_bf16(d4j_backend backend, Pointer stream, @Const FloatPointer x,
                                           @Cast("int64_t") long n, @Cast("uint16_t*") ShortPointer y);

    /** See {@code d4j_impl_cast_f32} in native/include/distill4j_impl.h: y = x widened, exact. */
    public static native int d4j_cast_f32(d4j_backend backend, Pointer stream, @Cast("const uint16_t*") ShortPointer x,
                                          @Cast("int64_t") long n, FloatPointer y);

    /** See {@code d4j_impl_attention_bf16_forward} in native/include/distill4j_impl.h. */
    public static native int d4j_attention_bf16_forward(d4j_backend backend, Pointer stream,
                                                        @Cast("const uint16_t*") ShortPointer qkv,
                                                        @Cast("int64_t") long b, @Cast("int64_t") long n,
                                                        @Cast("int64_t") long h, @Cast("int64_t") long dh, float scale,
                                                        @Cast("uint16_t*") ShortPointer out, FloatPointer lse);

    /** See {@code d4j_impl_attention_bf16_backward} in native/include/distill4j_impl.h. */
    public static native int d4j_attention_bf16_backward(d4j_backend backend, Pointer stream,
                                                         @Cast("const uint16_t*") ShortPointer qkv,
                                                         @Cast("const uint16_t*") ShortPointer out,
                                                         @Const FloatPointer lse,
                                                         @Cast("const uint16_t*") ShortPointer dout,
                                                         @Cast("int64_t") long b, @Cast("int64_t") long n,
                                                         @Cast("int64_t") long h, @Cast("int64_t") long dh, float scale,
                                                         @Cast("uint16_t*") ShortPointer dqkv);

    /** See {@code d4j_impl_linear_forward} in native/include/distill4j_impl.h. */
    public static native int d4j_linear_forward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Const FloatPointer weight, @Const FloatPointer bias, @Const FloatPointer residual, @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n, FloatPointer y, int precision);

    /** See {@code d4j_impl_linear_backward} in native/include/distill4j_impl.h. */
    public static native int d4j_linear_backward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Const FloatPointer weight, @Const FloatPointer dy, @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n, FloatPointer dx, FloatPointer dweight, FloatPointer dbias, int precision);

    /** See {@code d4j_impl_linear_bf16_forward} in native/include/distill4j_impl.h (bf16 as uint16_t bits). */
    public static native int d4j_linear_bf16_forward(d4j_backend backend, Pointer stream, @Cast("const uint16_t*") ShortPointer x, @Cast("const uint16_t*") ShortPointer weight, @Const FloatPointer bias, @Const FloatPointer residual, @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n, FloatPointer y);

    /** See {@code d4j_impl_linear_bf16_backward} in native/include/distill4j_impl.h (bf16 as uint16_t bits). */
    public static native int d4j_linear_bf16_backward(d4j_backend backend, Pointer stream, @Cast("const uint16_t*") ShortPointer x, @Cast("const uint16_t*") ShortPointer weight, @Cast("const uint16_t*") ShortPointer dy, @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n, FloatPointer dx, FloatPointer dweight, FloatPointer dbias);

    /** See {@code d4j_impl_layernorm_workspace} in native/include/distill4j_impl.h. */
    public static native @Cast("int64_t") long d4j_layernorm_workspace(d4j_backend backend, @Cast("int64_t") long m, @Cast("int64_t") long c);

    /** See {@code d4j_impl_layernorm_forward} in native/include/distill4j_impl.h. */
    public static native int d4j_layernorm_forward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Const FloatPointer weight, @Const FloatPointer bias, @Cast("int64_t") long m, @Cast("int64_t") long c, float eps, FloatPointer y, FloatPointer mean, FloatPointer rstd);

    /** See {@code d4j_impl_layernorm_backward} in native/include/distill4j_impl.h. */
    public static native int d4j_layernorm_backward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Const FloatPointer weight, @Const FloatPointer mean, @Const FloatPointer rstd, @Const FloatPointer dy, @Cast("int64_t") long m, @Cast("int64_t") long c, FloatPointer dx, FloatPointer dweight, FloatPointer dbias, Pointer workspace);

    /** See {@code d4j_impl_layernorm_forward_bf16} in native/include/distill4j_impl.h: y rounded once to bf16. */
    public static native int d4j_layernorm_forward_bf16(d4j_backend backend, Pointer stream, @Const FloatPointer x,
                                                        @Const FloatPointer weight, @Const FloatPointer bias,
                                                        @Cast("int64_t") long m, @Cast("int64_t") long c, float eps,
                                                        @Cast("uint16_t*") ShortPointer y, FloatPointer mean,
                                                        FloatPointer rstd);

    /** See {@code d4j_impl_gelu_forward} in native/include/distill4j_impl.h. */
    public static native int d4j_gelu_forward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Cast("int64_t") long n, FloatPointer y);

    /** See {@code d4j_impl_gelu_backward} in native/include/distill4j_impl.h. */
    public static native int d4j_gelu_backward(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Const FloatPointer dy, @Cast("int64_t") long n, FloatPointer dx);

    /** See {@code d4j_impl_gelu_forward_bf16} in native/include/distill4j_impl.h: GELU rounded once to bf16. */
    public static native int d4j_gelu_forward_bf16(d4j_backend backend, Pointer stream, @Const FloatPointer x,
                                                   @Cast("int64_t") long n, @Cast("uint16_t*") ShortPointer y);

    /** See {@code d4j_impl_gelu_backward_bf16} in native/include/distill4j_impl.h: dy gelu'(x) rounded to bf16. */
    public static native int d4j_gelu_backward_bf16(d4j_backend backend, Pointer stream, @Const FloatPointer x,
                                                    @Const FloatPointer dy, @Cast("int64_t") long n,
                                                    @Cast("uint16_t*") ShortPointer dx);

    /** See {@code d4j_impl_cross_entropy} in native/include/distill4j_impl.h. */
    public static native int d4j_cross_entropy(d4j_backend backend, Pointer stream, @Const FloatPointer logits, @Cast("const int32_t*") IntPointer labels, @Cast("int64_t") long b, @Cast("int64_t") long c, float labelSmoothing, float lossScale, FloatPointer rowLoss, FloatPointer loss, FloatPointer grad);

    /** See {@code d4j_impl_cross_entropy_soft} in native/include/distill4j_impl.h. */
    public static native int d4j_cross_entropy_soft(d4j_backend backend, Pointer stream, @Const FloatPointer logits, @Const FloatPointer targets, @Cast("int64_t") long b, @Cast("int64_t") long c, float labelSmoothing, float lossScale, FloatPointer rowLoss, FloatPointer loss, FloatPointer grad);

    /** See {@code d4j_impl_argmax} in native/include/distill4j_impl.h. */
    public static native int d4j_argmax(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Cast("int64_t") long b, @Cast("int64_t") long c, @Cast("int32_t*") IntPointer index);

    /** See {@code d4j_impl_sum_squares} in native/include/distill4j_impl.h. */
    public static native int d4j_sum_squares(d4j_backend backend, Pointer stream, @Const FloatPointer x, @Cast("int64_t") long n, int accumulate, FloatPointer out);

    /** See {@code d4j_impl_clip_scale} in native/include/distill4j_impl.h. */
    public static native int d4j_clip_scale(d4j_backend backend, Pointer stream, @Const FloatPointer sumsq, float maxNorm, FloatPointer norm, FloatPointer scale);

    /** See {@code d4j_impl_adamw} in native/include/distill4j_impl.h. */
    public static native int d4j_adamw(d4j_backend backend, Pointer stream, FloatPointer param, @Const FloatPointer grad, FloatPointer m, FloatPointer v, @Cast("int64_t") long n, float lr, float beta1, float beta2, float eps, float weightDecay, @Cast("int64_t") long step, @Const FloatPointer gradScale);

    /** See {@code d4j_impl_token_rows_forward} in native/include/distill4j_impl.h. */
    public static native int d4j_token_rows_forward(d4j_backend backend, Pointer stream, @Const FloatPointer tokens, @Cast("int64_t") long b, @Cast("int64_t") long t, @Cast("int64_t") long d, @Cast("int64_t") long prefix, FloatPointer rows);

    /** See {@code d4j_impl_token_rows_backward} in native/include/distill4j_impl.h. */
    public static native int d4j_token_rows_backward(d4j_backend backend, Pointer stream, @Const FloatPointer drows, @Cast("int64_t") long b, @Cast("int64_t") long t, @Cast("int64_t") long d, @Cast("int64_t") long prefix, FloatPointer dtokens);
}
