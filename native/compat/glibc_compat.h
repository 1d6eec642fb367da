/*
 * Oldest glibc symbol versions for the shipped libraries' own code (CMakeLists.txt D4J_PORTABLE: -include'd into
 * every translation unit of libdistill4j, libdistill4j_cpu, libdistill4j_cuda and the JNI glue).
 *
 * A library built against glibc 2.36 asks for the newest version of each symbol it calls: dlopen@GLIBC_2.34 (when
 * libdl moved into libc), pow@GLIBC_2.29 and logf@GLIBC_2.27 (new error handling), and a glibc older than that
 * refuses to load it. The old versions are still in every newer glibc and give the same results: the math ones
 * are wrappers around the same code, 5 instructions more per call (kernels call them per row, not per element).
 * With them the libraries load down to glibc 2.18 (pom.xml d4j.glibc.min; the floor is __cxa_thread_atexit_impl,
 * which thread_local strings need; tests/check-natives.sh holds every library to it). On a glibc older than 2.34
 * the dl* functions live in libdl.so.2, which the libraries therefore name as a dependency (D4J_PORTABLE).
 *
 * Symbols referenced from static archives (libstdc++.a) cannot be pinned here: see glibc_compat.c.
 * A symbol missing from this list shows up as a too-new version in tests/check-natives.sh: add it here.
 */
#ifndef D4J_GLIBC_COMPAT_H
#define D4J_GLIBC_COMPAT_H

/* Host code only: nvcc preprocesses each .cu file once more for the device, where there are no symbol versions. */
#if defined(__x86_64__) && defined(__linux__) && !defined(__CUDA_ARCH__)
/* An unreferenced .symver emits nothing, so every translation unit can take the whole list. */
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver dlerror,dlerror@GLIBC_2.2.5");
__asm__(".symver dlclose,dlclose@GLIBC_2.2.5");
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
__asm__(".symver pow,pow@GLIBC_2.2.5");
__asm__(".symver expf,expf@GLIBC_2.2.5");
__asm__(".symver logf,logf@GLIBC_2.2.5");
__asm__(".symver powf,powf@GLIBC_2.2.5");
__asm__(".symver exp2f,exp2f@GLIBC_2.2.5");
__asm__(".symver log2f,log2f@GLIBC_2.2.5");
#endif

#endif /* D4J_GLIBC_COMPAT_H */
