// A backend opened for one device and called from other threads (distill4j.h, "Threads and devices"): the CUDA
// kernels, emulated with two devices (cuda_emu.h), through the dispatch API as Java calls them. CUDA's current
// device is per host thread, so without the dispatch library's per-call d4j_impl_set_device a thread that did not
// open the backend launches on device 0; the emulator refuses a launch whose pointers are another device's memory,
// as a card without peer access faults.
//
//   device_threads_emu <libdistill4j_cudaemu.so>            the fix: every check passes, exit 0 (1 on any failure)
//   device_threads_emu <lib> unset_device                   planted bug: a second thread calls the implementation's
//                                                            entry directly, without d4j_impl_set_device (the old
//                                                            dispatch library); the emulator must say so
//   device_threads_emu <lib> unset_alloc                     planted bug: memory for the device-1 backend allocated
//                                                            on a thread that never set device 1 (a Java allocation
//                                                            without d4j_backend_use_device)
//
// The planted-bug modes exit 0 whatever happens; CTest passes them only on the emulator's message
// (PASS_REGULAR_EXPRESSION), so a crash or another error does not count as "caught".
// Results are checked against GELU's definition in float64, x Phi(x) with Phi from erfc, within 1e-6 relative
// (norm_act_emu's bound; fresh random inputs each run).
#include "distill4j.h"
#include "harness.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kN = 1000;  // 4 blocks of 256 threads, the last one partial

// The backend's memory (d4j_backend_alloc: tagged with its device by the emulator), freed at scope exit.
struct device_buffer {
    d4j_backend *backend;
    float *p;
    explicit device_buffer(d4j_backend *b, int64_t n)
        : backend(b), p(static_cast<float *>(d4j_backend_alloc(b, static_cast<size_t>(n) * sizeof(float)))) {
        if (p == nullptr) {
            std::fprintf(stderr, "d4j_backend_alloc failed: %s\n", d4j_backend_last_error(b));
            std::exit(1);
        }
    }
    ~device_buffer() {
        if (d4j_backend_free(backend, p) != 0) std::fprintf(stderr, "d4j_backend_free failed\n");
    }
    device_buffer(const device_buffer &) = delete;
    device_buffer &operator=(const device_buffer &) = delete;
};

d4j_backend *open_device(const char *lib, int device) {
    char err[1024] = "";
    d4j_backend *b = d4j_backend_open(lib, device, err, sizeof err);
    if (b == nullptr) std::fprintf(stderr, "cannot open %s for device %d: %s\n", lib, device, err);
    return b;
}

double gelu_ref(double x) { return x * 0.5 * std::erfc(-x / std::sqrt(2.0)); }

void fill_random(float *p, int64_t n, std::mt19937_64 &rng) {
    std::normal_distribution<float> dist(0.0f, 2.0f);
    for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
}

// Worst relative error of y against gelu(x) (NaN if any element is NaN).
double gelu_error(const float *x, const float *y, int64_t n) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double ref = gelu_ref(x[i]);
        worst = d4j_test::worst(worst, std::fabs(y[i] - ref) / std::fmax(std::fabs(ref), 1e-30));
    }
    return worst;
}

// gelu forward on `backend` from a new thread that has done nothing else; true when the call succeeded and y is
// GELU(x) within 1e-6 relative. y is filled with NaN first: a launch that never ran shows.
bool gelu_from_new_thread(d4j_backend *backend, const device_buffer &x, const device_buffer &y, const char *what,
                          std::mt19937_64 &rng) {
    fill_random(x.p, kN, rng);
    for (int64_t i = 0; i < kN; ++i) y.p[i] = NAN;
    int status = -1;
    std::string why;
    std::thread([&] {
        status = d4j_gelu_forward(backend, nullptr, x.p, kN, y.p);
        if (status != 0) why = d4j_backend_last_error(backend);
    }).join();
    const double err = gelu_error(x.p, y.p, kN);
    const bool ok = status == 0 && d4j_test::within(err, 1e-6);
    std::printf("%s: status %d, max rel err %.3g %s%s%s\n", what, status, err, ok ? "ok" : "FAILED",
                why.empty() ? "" : ": ", why.c_str());
    return ok;
}

// Two threads, one per device, each running forward and backward `rounds` times at once. Each lane's handle is
// opened, and its memory allocated, on a thread of its own (as a Java program opens a backend and builds a model
// on one thread, then runs it on another); the workers are fresh threads.
bool two_devices_concurrently(const char *lib, std::mt19937_64 &rng) {
    constexpr int rounds = 20;
    struct lane {
        d4j_backend *backend;
        device_buffer x, y, dy, dx;
        int status = 0;
        std::string why;
        lane(d4j_backend *b) : backend(b), x(b, kN), y(b, kN), dy(b, kN), dx(b, kN) {}
    };
    std::unique_ptr<lane> lanes[2];
    for (int d = 0; d < 2; ++d) {
        std::thread([&] {
            d4j_backend *b = open_device(lib, d);
            if (b != nullptr) lanes[d] = std::make_unique<lane>(b);
        }).join();
        if (lanes[d] == nullptr) return false;
    }
    lane &l0 = *lanes[0], &l1 = *lanes[1];
    for (lane *l : {&l0, &l1}) {
        fill_random(l->x.p, kN, rng);
        fill_random(l->dy.p, kN, rng);
    }
    auto work = [](lane &l) {
        for (int r = 0; r < rounds && l.status == 0; ++r) {
            for (int64_t i = 0; i < kN; ++i) l.y.p[i] = l.dx.p[i] = NAN;
            l.status = d4j_gelu_forward(l.backend, nullptr, l.x.p, kN, l.y.p);
            if (l.status == 0) l.status = d4j_gelu_backward(l.backend, nullptr, l.x.p, l.dy.p, kN, l.dx.p);
        }
        if (l.status != 0) l.why = d4j_backend_last_error(l.backend);
    };
    std::thread t0(work, std::ref(l0)), t1(work, std::ref(l1));
    t0.join();
    t1.join();
    bool ok = true;
    for (lane *l : {&l0, &l1}) {
        double err = gelu_error(l->x.p, l->y.p, kN);
        // gelu'(x) = Phi(x) + x phi(x); dx = dy gelu'(x), within 1e-6 relative + 1e-7 |dy| (norm_act_emu's bound).
        for (int64_t i = 0; i < kN; ++i) {
            const double x = l->x.p[i], phi = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
            const double ref = l->dy.p[i] * (0.5 * std::erfc(-x / std::sqrt(2.0)) + x * phi);
            const double e = std::fabs(l->dx.p[i] - ref) / (std::fabs(ref) + 0.1 * std::fabs(l->dy.p[i]) + 1e-30);
            err = d4j_test::worst(err, e);
        }
        const bool lane_ok = l->status == 0 && d4j_test::within(err, 1e-6);
        std::printf("device %d thread: status %d, max rel err %.3g %s%s%s\n", l == &l0 ? 0 : 1, l->status, err,
                    lane_ok ? "ok" : "FAILED", l->why.empty() ? "" : ": ", l->why.c_str());
        ok = ok && lane_ok;
    }
    for (std::unique_ptr<lane> &l : lanes) {
        d4j_backend *b = l->backend;
        l.reset();
        d4j_backend_close(b);
    }
    return ok;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: device_threads_emu <libdistill4j_cudaemu.so> [unset_device|unset_alloc]\n");
        return 2;
    }
    const char *lib = argv[1];
    const std::string mode = argc > 2 ? argv[2] : "";
    std::mt19937_64 rng(d4j_test::test_seed("device_threads_emu"));
    d4j_backend *b1 = open_device(lib, 1);
    if (b1 == nullptr) return 1;

    if (mode == "unset_device") {
        // What the dispatch library did before: init set device 1 on this thread only; the entry is called from
        // another thread with nothing set there.
        using gelu_fn = int (*)(void *, const float *, int64_t, float *);
        void *handle = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
        auto gelu = handle != nullptr ? reinterpret_cast<gelu_fn>(dlsym(handle, "d4j_impl_gelu_forward")) : nullptr;
        if (gelu == nullptr) return 1;
        device_buffer x(b1, kN), y(b1, kN);
        fill_random(x.p, kN, rng);
        int status = 0;
        std::thread([&] { status = gelu(nullptr, x.p, kN, y.p); }).join();
        std::printf("unset_device: status %d\n", status);
        d4j_backend_close(b1);
        return 0;
    }
    if (mode == "unset_alloc") {
        // Memory taken from the implementation on a thread that never made device 1 current, then used by a
        // correct call on the device-1 backend.
        using malloc_fn = void *(*)(size_t);
        using free_fn = int (*)(void *);
        void *handle = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
        auto impl_malloc = handle != nullptr ? reinterpret_cast<malloc_fn>(dlsym(handle, "d4j_impl_malloc")) : nullptr;
        auto impl_free = handle != nullptr ? reinterpret_cast<free_fn>(dlsym(handle, "d4j_impl_free")) : nullptr;
        if (impl_malloc == nullptr || impl_free == nullptr) return 1;
        float *x = nullptr, *y = nullptr;
        std::thread([&] {
            x = static_cast<float *>(impl_malloc(kN * sizeof(float)));
            y = static_cast<float *>(impl_malloc(kN * sizeof(float)));
        }).join();
        if (x == nullptr || y == nullptr) return 1;
        fill_random(x, kN, rng);
        const int status = d4j_gelu_forward(b1, nullptr, x, kN, y);
        std::printf("unset_alloc: status %d: %s\n", status, status != 0 ? d4j_backend_last_error(b1) : "");
        impl_free(x);
        impl_free(y);
        d4j_backend_close(b1);
        return 0;
    }
    if (!mode.empty()) {
        std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 2;
    }

    bool ok = true;
    // Device 2 does not exist: a clear refusal, not a crash.
    {
        char err[1024] = "";
        d4j_backend *b2 = d4j_backend_open(lib, 2, err, sizeof err);
        const bool refused = b2 == nullptr && std::strstr(err, "CUDA device 2 does not exist") != nullptr;
        std::printf("open device 2: %s (%s)\n", refused ? "refused" : "NOT REFUSED", err);
        ok = ok && refused;
        if (b2 != nullptr) d4j_backend_close(b2);
    }
    // The case: device 1 opened on this thread, memory allocated here, the kernel called from another.
    d4j_backend *b0 = nullptr;
    {
        device_buffer x1(b1, kN), y1(b1, kN);
        ok = gelu_from_new_thread(b1, x1, y1, "device 1, opened and allocated on main, called from a new thread", rng) &&
             ok;
        b0 = open_device(lib, 0);
        if (b0 == nullptr) return 1;
        {
            device_buffer x0(b0, kN), y0(b0, kN);
            ok = gelu_from_new_thread(b0, x0, y0, "device 0, called from a new thread", rng) && ok;
            // One thread calling device 0, then device 1: the second call must not run on what the first left current.
            fill_random(x0.p, kN, rng);
            fill_random(x1.p, kN, rng);
            int s0 = -1, s1 = -1;
            std::thread([&] {
                s0 = d4j_gelu_forward(b0, nullptr, x0.p, kN, y0.p);
                s1 = d4j_gelu_forward(b1, nullptr, x1.p, kN, y1.p);
            }).join();
            const double err = d4j_test::worst(gelu_error(x0.p, y0.p, kN), gelu_error(x1.p, y1.p, kN));
            const bool this_ok = s0 == 0 && s1 == 0 && d4j_test::within(err, 1e-6);
            std::printf("one thread, device 0 then device 1: status %d %d, max rel err %.3g %s\n", s0, s1, err,
                        this_ok ? "ok" : "FAILED");
            ok = ok && this_ok;
        }
        // Memory allocated on a thread that has done nothing else, used from another.
        {
            device_buffer *x = nullptr, *y = nullptr;
            std::thread([&] {
                x = new device_buffer(b1, kN);
                y = new device_buffer(b1, kN);
            }).join();
            ok = gelu_from_new_thread(b1, *x, *y, "device 1, allocated on one new thread, called from another", rng) && ok;
            delete x;
            delete y;
        }
    }
    ok = two_devices_concurrently(lib, rng) && ok;
    d4j_backend_close(b0);
    d4j_backend_close(b1);
    std::printf("device_threads_emu: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
