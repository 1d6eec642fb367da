// The CPU kernels' thread count (native/cpu/threads.cpp): OMP_NUM_THREADS first, else the affinity mask capped by
// the cgroup CPU quota. The cgroup cases read fake /proc/self and cgroup trees written to a temporary directory
// (v2 cpu.max with a tighter parent, v1 cfs files, a hybrid host, a container that sees only its own subtree);
// the load cases size the team from what other processes left free (fake /proc/stat text); the affinity case
// narrows this process to one CPU; the library case checks that libdistill4j_cpu exports the decision it uses.
//
//   cpu_threads <libdistill4j_cpu.so>
#include "threads.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using namespace d4j::cpu;

int failures = 0;

void expect_int(const char *what, int got, int want) {
    const bool ok = got == want;
    std::printf("  %-4s %s: %d (want %d)\n", ok ? "ok" : "FAIL", what, got, want);
    failures += !ok;
}

void expect_cpus(const char *what, double got, double want) {
    const bool ok = std::fabs(got - want) <= 1e-9;  // also false for NaN
    std::printf("  %-4s %s: %g (want %g)\n", ok ? "ok" : "FAIL", what, got, want);
    failures += !ok;
}

void write(const fs::path &file, const std::string &text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
}

// A fake /proc/self (cgroup, mountinfo) under `root`/proc; mountinfo lines name mount points under `root`.
std::string fake_proc(const fs::path &root, const std::string &cgroup, const std::string &mountinfo) {
    write(root / "proc/cgroup", cgroup);
    write(root / "proc/mountinfo", mountinfo);
    return (root / "proc").string();
}

void omp_num_threads_cases() {
    std::printf("OMP_NUM_THREADS\n");
    expect_int("unset", parse_omp_num_threads(nullptr), 0);
    expect_int("\"3\"", parse_omp_num_threads("3"), 3);
    expect_int("\" 2 \"", parse_omp_num_threads(" 2 "), 2);
    expect_int("\"4,2\" (nested levels: the first)", parse_omp_num_threads("4,2"), 4);
    expect_int("\"\"", parse_omp_num_threads(""), 0);
    expect_int("\"0\"", parse_omp_num_threads("0"), 0);
    expect_int("\"-2\"", parse_omp_num_threads("-2"), 0);
    expect_int("\"two\"", parse_omp_num_threads("two"), 0);
    expect_int("\"2x\"", parse_omp_num_threads("2x"), 0);
}

void choice_cases() {
    std::printf("choice\n");
    expect_int("OMP_NUM_THREADS=3 over a 1-CPU quota and 8 CPUs", choose_threads(3, 1.0, 8), 3);
    expect_int("no quota, 8 CPUs", choose_threads(0, 0, 8), 8);
    expect_int("quota 2 CPUs of 8", choose_threads(0, 2.0, 8), 2);
    expect_int("quota 1.5 CPUs of 8 (rounded up)", choose_threads(0, 1.5, 8), 2);
    expect_int("quota 0.5 CPU of 8", choose_threads(0, 0.5, 8), 1);
    expect_int("quota 16 CPUs, 4 in the affinity mask", choose_threads(0, 16.0, 4), 4);
    expect_int("no CPU reported", choose_threads(0, 0, 0), 1);
}

void cgroup_cases(const fs::path &tmp) {
    std::printf("cgroup quota\n");
    {  // v2, the quota on the leaf: 150000 / 100000
        const fs::path root = tmp / "v2leaf", cg = root / "sys/fs/cgroup";
        write(cg / "kubepods/pod1/c1/cpu.max", "150000 100000\n");
        write(cg / "kubepods/pod1/cpu.max", "max 100000\n");
        const std::string proc = fake_proc(root, "0::/kubepods/pod1/c1\n",
                                           "30 1 0:26 / " + cg.string() + " rw,nosuid - cgroup2 cgroup2 rw\n");
        expect_cpus("v2 leaf cpu.max 150000 100000", cgroup_cpu_quota(proc.c_str()), 1.5);
    }
    {  // v2, the tighter limit on a parent binds the child
        const fs::path root = tmp / "v2parent", cg = root / "sys/fs/cgroup";
        write(cg / "a/b/cpu.max", "max 100000\n");
        write(cg / "a/cpu.max", "50000 100000\n");
        const std::string proc = fake_proc(root, "0::/a/b\n",
                                           "30 1 0:26 / " + cg.string() + " rw - cgroup2 cgroup2 rw\n");
        expect_cpus("v2 parent 50000 100000 over an unlimited leaf", cgroup_cpu_quota(proc.c_str()), 0.5);
    }
    {  // v2 without a limit anywhere
        const fs::path root = tmp / "v2max", cg = root / "sys/fs/cgroup";
        write(cg / "a/cpu.max", "max 100000\n");
        const std::string proc =
            fake_proc(root, "0::/a\n", "30 1 0:26 / " + cg.string() + " rw - cgroup2 cgroup2 rw\n");
        expect_cpus("v2 cpu.max max", cgroup_cpu_quota(proc.c_str()), 0);
    }
    {  // a container that sees only its own subtree: the mount's root is the process's cgroup
        const fs::path root = tmp / "v2ns", cg = root / "sys/fs/cgroup";
        write(cg / "cpu.max", "300000 100000\n");
        const std::string proc = fake_proc(root, "0::/docker/abc\n",
                                           "30 1 0:26 /docker/abc " + cg.string() + " rw - cgroup2 cgroup2 rw\n");
        expect_cpus("v2 mount rooted at the container's cgroup", cgroup_cpu_quota(proc.c_str()), 3.0);
    }
    {  // v1: cpu,cpuacct hierarchy with cfs quota and period
        const fs::path root = tmp / "v1", cg = root / "sys/fs/cgroup/cpu,cpuacct";
        write(cg / "docker/abc/cpu.cfs_quota_us", "200000\n");
        write(cg / "docker/abc/cpu.cfs_period_us", "100000\n");
        const std::string proc = fake_proc(root, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
                                           "40 31 0:29 / " + cg.string() +
                                               " rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n");
        expect_cpus("v1 cfs_quota_us 200000 / cfs_period_us 100000", cgroup_cpu_quota(proc.c_str()), 2.0);
    }
    {  // v1 without a quota (-1)
        const fs::path root = tmp / "v1none", cg = root / "sys/fs/cgroup/cpu";
        write(cg / "cpu.cfs_quota_us", "-1\n");
        write(cg / "cpu.cfs_period_us", "100000\n");
        const std::string proc =
            fake_proc(root, "1:cpu:/\n", "32 31 0:29 / " + cg.string() + " rw - cgroup cgroup rw,cpu\n");
        expect_cpus("v1 cfs_quota_us -1", cgroup_cpu_quota(proc.c_str()), 0);
    }
    {  // hybrid: v2 mounted (no cpu controller files there) and the v1 cpu hierarchy holding the quota
        const fs::path root = tmp / "hybrid", v2 = root / "sys/fs/cgroup/unified", v1 = root / "sys/fs/cgroup/cpu";
        fs::create_directories(v2);
        write(v1 / "job/cpu.cfs_quota_us", "100000\n");
        write(v1 / "job/cpu.cfs_period_us", "100000\n");
        const std::string proc = fake_proc(root, "1:cpu:/job\n0::/job\n",
                                           "41 31 0:38 / " + v2.string() + " rw - cgroup2 cgroup2 rw\n" +
                                               "32 31 0:29 / " + v1.string() + " rw - cgroup cgroup rw,cpu\n");
        expect_cpus("hybrid host, quota in the v1 cpu hierarchy", cgroup_cpu_quota(proc.c_str()), 1.0);
    }
    {  // nothing readable: no quota
        expect_cpus("no /proc files", cgroup_cpu_quota((tmp / "nowhere").c_str()), 0);
    }
}

void load_cases() {
    std::printf("team under load\n");
    expect_int("2 threads, 2 CPUs, nothing else running", team_for(2, 2, 0.0), 2);
    expect_int("2 threads, 2 CPUs, others used 0.4 CPU", team_for(2, 2, 0.4), 2);
    expect_int("2 threads, 2 CPUs, others used 0.67 CPU (one busy process beside our 2 threads)",
               team_for(2, 2, 0.67), 1);
    expect_int("2 threads, 2 CPUs, others used 1 CPU", team_for(2, 2, 1.0), 1);
    expect_int("2 threads, 2 CPUs, others used 3 CPUs: still 1", team_for(2, 2, 3.0), 1);
    expect_int("8 threads, 16 CPUs, others used 10", team_for(8, 16, 10.0), 6);
    expect_int("8 threads (quota), 64 CPUs, others used 40", team_for(8, 64, 40.0), 8);
    expect_int("negative (tick rounding)", team_for(2, 2, -0.2), 2);
    expect_int("NaN", team_for(2, 2, std::nan("")), 2);

    const char *stat = "cpu  900 10 300 5000 40 0 5 20 7 0\n"
                       "cpu0 100 1 30 1000 10 0 1 5 7 0\n"
                       "cpu1 200 2 60 2000 20 0 2 6 0 0\n"
                       "cpu2 300 3 90 3000 30 1 3 7 0 0\n"
                       "intr 12345\nctxt 678\n";
    cpu_set_t mask;
    CPU_ZERO(&mask);
    CPU_SET(0, &mask);
    CPU_SET(2, &mask);
    unsigned long long busy = 0, total = 0;
    const bool found = cpu_ticks(stat, mask, busy, total);
    expect_int("/proc/stat lines found for CPUs {0, 2}", found, 1);
    // busy: user + nice + system + irq + softirq + steal; total adds idle and iowait. The "cpu" total line is not
    // a CPU, and guest (inside user) is not added twice.
    expect_int("busy ticks of CPUs {0, 2}", static_cast<int>(busy),
               (100 + 1 + 30 + 0 + 1 + 5) + (300 + 3 + 90 + 1 + 3 + 7));
    expect_int("total ticks of CPUs {0, 2}", static_cast<int>(total), (137 + 1000 + 10) + (404 + 3000 + 30));
    CPU_ZERO(&mask);
    CPU_SET(5, &mask);
    expect_int("no line for CPU 5", cpu_ticks(stat, mask, busy, total), 0);
}

void affinity_and_environment_cases() {
    std::printf("this process\n");
    cpu_set_t saved;
    CPU_ZERO(&saved);
    if (sched_getaffinity(0, sizeof saved, &saved) != 0) {
        std::printf("  FAIL sched_getaffinity\n");
        ++failures;
        return;
    }
    int first = 0;
    while (first < CPU_SETSIZE && !CPU_ISSET(first, &saved)) ++first;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    unsetenv("OMP_NUM_THREADS");
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        std::printf("  FAIL sched_setaffinity\n");
        ++failures;
        return;
    }
    expect_int("affinity narrowed to one CPU", affinity_cpus(), 1);
    expect_int("threads with one CPU in the affinity mask", decide_threads(), 1);
    setenv("OMP_NUM_THREADS", "3", 1);
    expect_int("OMP_NUM_THREADS=3 with one CPU in the mask", decide_threads(), 3);
    unsetenv("OMP_NUM_THREADS");
    sched_setaffinity(0, sizeof saved, &saved);
    expect_int("affinity restored", affinity_cpus(), CPU_COUNT(&saved));
}

void library_case(const char *cpu_library) {
    std::printf("libdistill4j_cpu\n");
    setenv("OMP_NUM_THREADS", "3", 1);  // before the library's first decision
    void *lib = dlopen(cpu_library, RTLD_NOW | RTLD_LOCAL);
    auto threads_entry = lib != nullptr ? reinterpret_cast<int (*)()>(dlsym(lib, "d4j_impl_threads")) : nullptr;
    if (threads_entry == nullptr) {
        std::printf("  FAIL %s does not export d4j_impl_threads: %s\n", cpu_library, dlerror());
        ++failures;
        return;
    }
    expect_int("d4j_impl_threads with OMP_NUM_THREADS=3", threads_entry(), 3);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: cpu_threads <libdistill4j_cpu.so>\n");
        return 2;
    }
    char pattern[] = "/tmp/d4j-cpu-threads-XXXXXX";
    const char *tmp = mkdtemp(pattern);
    if (tmp == nullptr) {
        std::perror("mkdtemp");
        return 2;
    }
    omp_num_threads_cases();
    choice_cases();
    cgroup_cases(tmp);
    load_cases();
    affinity_and_environment_cases();
    library_case(argv[1]);
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    std::printf("cpu_threads: %s\n", failures == 0 ? "all passed" : "FAILED");
    return failures == 0 ? 0 : 1;
}
