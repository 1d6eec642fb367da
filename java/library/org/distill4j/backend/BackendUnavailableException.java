package org.distill4j.backend;

/** A backend cannot work on this machine; the message names what is missing (driver, library, device). */
public final class BackendUnavailableException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** A backend that cannot be opened, and why. */
    public BackendUnavailableException(String message) {
        super(message);
    }
}
