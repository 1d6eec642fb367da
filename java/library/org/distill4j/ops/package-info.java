/**
 * The fused ops, each with a CUDA and a CPU kernel behind one C ABI. One verb per kind of op: layers
 * ({@link org.distill4j.ops.PatchEmbed}, {@link org.distill4j.ops.Attention}, {@link org.distill4j.ops.LayerNorm},
 * {@link org.distill4j.ops.Linear}, {@link org.distill4j.ops.Gelu}, {@link org.distill4j.ops.TokenRows}) have
 * {@code forward} and {@code backward}; ops that give a value and its gradient in one fused pass
 * ({@link org.distill4j.ops.KlDiv}, {@link org.distill4j.ops.CrossEntropy}, {@link org.distill4j.ops.GradNorm}) have
 * {@code compute}; the optimizer ({@link org.distill4j.ops.AdamW}) has {@code step}.
 *
 * <p>Every op writes into tensors the caller allocated; parameter gradients of layers accumulate (+=), so zero
 * them before the first backward of a step ({@code Tensor.empty} leaves memory uninitialised).
 */
package org.distill4j.ops;
