// How many threads the CPU kernels use: decided here and passed to every parallel region (num_threads), so that
// no region starts more threads than this process has CPUs for. See threads.h.
//
// The most: libgomp alone sizes its teams from OMP_NUM_THREADS or the affinity mask, and knows nothing of cgroup
// quotas: in a container limited to 2 CPUs on a 64-core host it would start 64 threads, each region then waiting
// for threads the quota has parked. The JDK (Runtime.availableProcessors) and Rust's available_parallelism fold the
// quota in the same way as here; native programs that call the kernels directly (the CTest programs) get the same.
//
// Now: a parallel region ends when its last thread arrives, and a training step runs hundreds of them. With another
// process on the machine, one of our threads is often waiting for a core, and every region then waits a scheduler
// time slice (milliseconds) for it: on 2 cores beside one busy process the DeiT-Ti step went from 0.45 s to
// 1.0-1.4 s on 2 threads (bench/RESULTS.md). So every kLoadWindowMs the team is resized to the CPUs that other processes leave free (/proc/stat's
// busy time on our CPUs, minus our own CPU time): 1 thread beside one busy process on 2 cores, all of them again
// once it stops. The kernels split their work by threads() and the shape, never by the team (common.h), so the
// team size changes no result.
#include "threads.h"
#include "distill4j_impl.h"

#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace {

// Files are read with open/read and parsed by hand, not with iostreams: libstdc++ is linked statically, and its
// file and locale code would raise the glibc this library needs to 2.34 (fstat64, pthread_once; see
// tests/check-natives.sh). False when the file cannot be read (no such file, no /proc).
bool read_file(const std::string &path, std::string &text) {
    text.clear();
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buffer[4096];
    ssize_t n = 0;
    while ((n = read(fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) text.append(buffer, static_cast<size_t>(n));
    close(fd);
    return n == 0;
}

std::string read_first_line(const std::string &path) {
    std::string text;
    if (!read_file(path, text)) return "";
    return text.substr(0, text.find('\n'));
}

// As std::getline would cut them: a trailing separator gives no empty last part.
std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> parts;
    for (size_t start = 0; start < s.size();) {
        size_t end = s.find(sep, start);
        if (end == std::string::npos) end = s.size();
        parts.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

// Blank-separated words, as `in >> word` reads them.
std::vector<std::string> words(const std::string &s) {
    std::vector<std::string> out;
    const char *blanks = " \t\r\n\v\f";
    for (size_t start = s.find_first_not_of(blanks); start != std::string::npos;) {
        const size_t end = s.find_first_of(blanks, start);
        out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
        start = end == std::string::npos ? end : s.find_first_not_of(blanks, end);
    }
    return out;
}

bool parse_long(const std::string &s, long long &out) {
    if (s.empty()) return false;
    char *end = nullptr;
    errno = 0;
    out = std::strtoll(s.c_str(), &end, 10);
    return errno == 0 && end != s.c_str() && *end == '\0';
}

// CPUs one cgroup directory allows, or 0 without a limit there. v2: cpu.max "QUOTA PERIOD" or "max PERIOD".
// v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us.
double quota_in(const std::string &dir, bool v2) {
    long long quota = 0, period = 0;
    if (v2) {
        const std::vector<std::string> w = words(read_first_line(dir + "/cpu.max"));
        if (w.size() < 2 || w[0] == "max" || !parse_long(w[0], quota) || !parse_long(w[1], period)) return 0;
    } else if (!parse_long(read_first_line(dir + "/cpu.cfs_quota_us"), quota) ||
               !parse_long(read_first_line(dir + "/cpu.cfs_period_us"), period)) {
        return 0;
    }
    return quota > 0 && period > 0 ? static_cast<double>(quota) / static_cast<double>(period) : 0;
}

// The tightest quota from `dir` up to the mount point `top` (a parent's limit binds its children).
double tightest_quota(std::string dir, const std::string &top, bool v2) {
    double best = 0;
    while (true) {
        const double q = quota_in(dir, v2);
        if (q > 0 && (best == 0 || q < best)) best = q;
        if (dir.size() <= top.size()) return best;
        const size_t slash = dir.find_last_of('/');
        if (slash == std::string::npos || slash < top.size()) return best;
        dir.erase(std::max(slash, top.size()));
    }
}

}  // namespace

int d4j::cpu::parse_omp_num_threads(const char *value) {
    if (value == nullptr) return 0;
    // The first entry of the list ("4" or "4,2" for nested levels), blanks allowed around it, as libgomp reads it.
    const std::vector<std::string> list = split(value, ',');
    std::string first = list.empty() ? "" : list[0];
    first.erase(0, first.find_first_not_of(" \t"));
    first.erase(first.find_last_not_of(" \t") + 1);
    long long n = 0;
    return parse_long(first, n) && n >= 1 && n <= 1 << 16 ? static_cast<int>(n) : 0;
}

double d4j::cpu::cgroup_cpu_quota(const char *proc_self) {
    const std::string proc = proc_self;
    // cgroup v2 has one line "0::PATH"; v1 has "ID:CONTROLLERS:PATH" per hierarchy, the cpu controller's among them.
    std::string v2_path, v1_path;
    std::string text;
    if (read_file(proc + "/cgroup", text)) {
        for (const std::string &line : split(text, '\n')) {
            const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
            if (b == std::string::npos) continue;
            const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
            if (line.compare(0, a, "0") == 0 && controllers.empty()) v2_path = path;
            for (const std::string &c : split(controllers, ','))
                if (c == "cpu") v1_path = path;
        }
    }
    if (v2_path.empty() && v1_path.empty()) return 0;
    // mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
    double best = 0;
    if (!read_file(proc + "/mountinfo", text)) return 0;
    for (const std::string &line : split(text, '\n')) {
        const std::vector<std::string> f = words(line);
        const auto dash = std::find(f.begin(), f.end(), "-");
        if (f.size() < 5 || f.end() - dash < 4) continue;  // also when there is no "-"
        const std::string &root = f[3], &mount = f[4], &fstype = dash[1], &super_options = dash[3];
        const bool v2 = fstype == "cgroup2";
        bool v1_cpu = false;
        if (fstype == "cgroup")
            for (const std::string &o : split(super_options, ',')) v1_cpu = v1_cpu || o == "cpu";
        if (!(v2 && !v2_path.empty()) && !(v1_cpu && !v1_path.empty())) continue;
        // The process's cgroup path is absolute in the hierarchy; the mount shows the hierarchy from `root` on (a
        // container often sees only its own subtree, mounted as /sys/fs/cgroup).
        std::string path = v2 ? v2_path : v1_path;
        if (root != "/" && path.compare(0, root.size(), root) == 0) path.erase(0, root.size());
        else if (root != "/") path.clear();
        if (!path.empty() && path.back() == '/') path.pop_back();
        // Hybrid hosts mount both; the controller lives in one of them, the other has no files: take the tightest.
        const double q = tightest_quota(mount + path, mount, v2);
        if (q > 0 && (best == 0 || q < best)) best = q;
    }
    return best;
}

int d4j::cpu::choose_threads(int omp_num_threads, double cgroup_cpus, int affinity_cpus) {
    if (omp_num_threads >= 1) return omp_num_threads;
    int n = std::max(1, affinity_cpus);
    // Rounded up, as the JDK does: 1.5 CPUs gives 2 threads, throttled together for a quarter of each period
    // rather than one thread leaving half a CPU unused.
    if (cgroup_cpus > 0) n = std::min(n, std::max(1, static_cast<int>(std::ceil(cgroup_cpus - 1e-9))));
    return n;
}

int d4j::cpu::affinity_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    return std::max(1, CPU_COUNT(&set));
}

int d4j::cpu::decide_threads() {
    return choose_threads(parse_omp_num_threads(std::getenv("OMP_NUM_THREADS")), cgroup_cpu_quota("/proc/self"),
                          affinity_cpus());
}

int d4j::cpu::threads() {
    static const int n = decide_threads();
    return n;
}

int d4j::cpu::team_for(int max, int cpus, double others) {
    if (!(others >= 0)) others = 0;  // also NaN
    const double free = static_cast<double>(cpus) - others;
    const long n = free >= max ? max : std::lround(free);
    return static_cast<int>(std::clamp<long>(n, 1, max));
}

bool d4j::cpu::cpu_ticks(const char *text, const cpu_set_t &mask, unsigned long long &busy,
                         unsigned long long &total) {
    busy = total = 0;
    bool any = false;
    for (const std::string &line : split(text, '\n')) {
        // "cpuN user nice system idle iowait irq softirq steal guest guest_nice" (guest is inside user).
        int cpu = -1;
        unsigned long long v[8] = {};
        if (line.compare(0, 3, "cpu") != 0 || line.size() < 4 || line[3] < '0' || line[3] > '9') continue;  // "cpu "
        if (std::sscanf(line.c_str(), "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2],
                        &v[3], &v[4], &v[5], &v[6], &v[7]) < 5 ||
            cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &mask))
            continue;
        const unsigned long long b = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        busy += b;
        total += b + v[3] + v[4];
        any = true;
    }
    return any;
}

namespace {

int64_t now_ns(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Samples /proc/stat and this process's CPU time at most once per window, from whichever thread starts a region
// first once the window has passed (the others keep the last answer: no waiting on the lock).
class load_monitor {
  public:
    explicit load_monitor(int max) : max_(max), team_(max) {
        CPU_ZERO(&mask_);
        if (sched_getaffinity(0, sizeof mask_, &mask_) != 0) next_ns_ = std::numeric_limits<int64_t>::max();
        cpus_ = std::max(1, CPU_COUNT(&mask_));
        const long hz = sysconf(_SC_CLK_TCK);
        ticks_per_ns_ = hz > 0 ? static_cast<double>(hz) * 1e-9 : 100e-9;
    }

    int team() {
        const int64_t now = now_ns(CLOCK_MONOTONIC);
        if (now >= next_ns_.load(std::memory_order_relaxed)) {
            // A try-lock of our own, not std::mutex: see read_file.
            if (!sampling_.exchange(true, std::memory_order_acquire)) {
                if (now >= next_ns_.load(std::memory_order_relaxed)) sample(now);
                sampling_.store(false, std::memory_order_release);
            }
        }
        return team_.load(std::memory_order_relaxed);
    }

  private:
    void sample(int64_t now) {
        unsigned long long busy = 0, total = 0;
        const bool read = read_file("/proc/stat", text_);
        const int64_t process = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        if (!read || !d4j::cpu::cpu_ticks(text_.c_str(), mask_, busy, total)) {
            next_ns_.store(std::numeric_limits<int64_t>::max(), std::memory_order_relaxed);  // no /proc: all threads
            return;
        }
        if (total_ != 0 && total > total_) {  // the first sample only sets the baseline
            // Ticks per CPU in the window; ours in ticks from the process's CPU clock (every thread of it).
            const double window = static_cast<double>(total - total_) / cpus_;
            const double ours = static_cast<double>(process - process_ns_) * ticks_per_ns_;
            const double others = (static_cast<double>(busy - busy_) - ours) / window;
            team_.store(d4j::cpu::team_for(max_, cpus_, others), std::memory_order_relaxed);
        }
        busy_ = busy, total_ = total, process_ns_ = process;
        next_ns_.store(now + int64_t{d4j::cpu::kLoadWindowMs} * 1000000, std::memory_order_relaxed);
    }

    const int max_;
    std::atomic<int> team_;
    std::atomic<int64_t> next_ns_{0};
    std::atomic<bool> sampling_{false};
    std::string text_;  // kept: /proc/stat is read every window
    cpu_set_t mask_;
    int cpus_ = 1;
    double ticks_per_ns_ = 0;
    unsigned long long busy_ = 0, total_ = 0;
    int64_t process_ns_ = 0;
};

}  // namespace

namespace {
std::atomic<int> forced_team{0};
}

int d4j::cpu::team() {
    static const bool fixed = parse_omp_num_threads(std::getenv("OMP_NUM_THREADS")) > 0;
    const int max = threads();
    if (const int forced = forced_team.load(std::memory_order_relaxed); forced > 0) return std::min(forced, max);
    if (fixed || max == 1) return max;
    static load_monitor monitor(max);
    return monitor.team();
}

D4J_IMPL_API void d4j_impl_force_team(int n) { forced_team.store(std::max(0, n), std::memory_order_relaxed); }

D4J_IMPL_API int d4j_impl_threads(void) { return d4j::cpu::threads(); }
