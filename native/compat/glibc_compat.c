/*
 * What libstdc++.a (linked into the shipped libraries, D4J_PORTABLE) needs from a glibc newer than 2.18, supplied
 * here instead: the link redirects these references with -Wl,--wrap=<symbol> to __wrap_<symbol>.
 *
 * std::random_device (random.o, which comes along with libstdc++'s string instantiations; nothing here uses it)
 * calls arc4random (glibc 2.36) and getentropy (2.25); the reference-count code reads __libc_single_threaded
 * (2.32). Hidden, so no other library in the process binds to them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define D4J_HIDDEN __attribute__((visibility("hidden")))

/* Always "other threads may exist": reference counts then always use atomic operations, which is never wrong. */
D4J_HIDDEN char __wrap___libc_single_threaded = 0;

/* getentropy's contract (at most 256 bytes, all or -1) on the getrandom system call (Linux 3.17). */
D4J_HIDDEN int __wrap_getentropy(void *buffer, size_t length) {
    if (length > 256) {
        errno = EIO;
        return -1;
    }
    for (size_t done = 0; done < length;) {
        const long got = syscall(SYS_getrandom, (char *)buffer + done, length - done, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

D4J_HIDDEN uint32_t __wrap_arc4random(void) {
    uint32_t value;
    if (__wrap_getentropy(&value, sizeof value) != 0) abort(); /* arc4random cannot fail: glibc aborts too */
    return value;
}
