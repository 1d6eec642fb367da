package org.distill4j;

import java.util.concurrent.atomic.AtomicReference;

/**
 * One thread at a time inside an object: {@link #enter} at the start of each public operation, {@link #exit} in
 * its {@code finally}. A thread entering while another is inside gets a {@link ConcurrentUseException}; nested
 * calls of the same thread (predict calls forward) pass. Successive use from different threads is allowed (a
 * model handed from one thread to another), as with a CUDA stream, whose order is the calls' order.
 *
 * <p>Costs one compare-and-set per call, nothing next to the kernels a call queues.
 */
public final class ThreadConfinement {
    private final String what;
    private final AtomicReference<Thread> user = new AtomicReference<>();
    private int depth;  // read and written only by the thread in `user`; handed over through its set/CAS

    /** {@code what} names the object in messages, e.g. "VisionTransformer[mnist-student, batch 128]". */
    public ThreadConfinement(String what) {
        this.what = what;
    }

    /** Enters the object, or throws when another thread is inside it. */
    public void enter() {
        Thread me = Thread.currentThread();
        if (user.get() == me) {
            depth++;
            return;
        }
        if (!user.compareAndSet(null, me)) {
            Thread other = user.get();
            throw new ConcurrentUseException(what + " was called from thread '" + me.getName() + "' while thread '"
                    + (other == null ? "?" : other.getName()) + "' was using it; it is not thread-safe: give each "
                    + "thread its own, or call it from one thread at a time");
        }
        depth = 1;
    }

    /** Leaves it (after {@link #enter}, in a {@code finally}). */
    public void exit() {
        if (user.get() != Thread.currentThread()) throw new IllegalStateException("exit() without enter()");
        if (--depth == 0) user.set(null);
    }
}
