// The CPU kernels' thread count: one decision per process, passed to every OpenMP parallel region.
#ifndef D4J_CPU_THREADS_H
#define D4J_CPU_THREADS_H

#include <sched.h>

namespace d4j::cpu {

// The most threads a parallel region of the CPU kernels runs with: OMP_NUM_THREADS when set, else the CPUs of this
// process's affinity mask, capped by its cgroup CPU quota (rounded up). Decided at the first call.
int threads();

// The threads a parallel region runs with now (num_threads): threads(), or fewer while other processes keep this
// process's CPUs busy (measured over the last kLoadWindowMs from /proc/stat). Always threads() when
// OMP_NUM_THREADS is set: the user's count is kept as given.
int team();
constexpr int kLoadWindowMs = 100;
// For tests, exported as d4j_impl_force_team(n): from now on team() is min(n, threads()) whatever the load; 0 gives
// the choice back to the load monitor. cpu_thread_invariance runs every op on every team size with it.

// The team for `max` threads on `cpus` CPUs of which other processes kept `others` busy on average: the CPUs
// they leave free, rounded to the nearest, at least 1 and at most max.
int team_for(int max, int cpus, double others);

// Busy and total clock ticks summed over the "cpuN" lines of /proc/stat text for the CPUs in `mask` (busy: user,
// nice, system, irq, softirq and steal, as time another virtual machine took counts against us too). False when
// no line matched.
bool cpu_ticks(const char *proc_stat_text, const cpu_set_t &mask, unsigned long long &busy, unsigned long long &total);

// The parts of that decision, separate so that a test can feed them fake input.
int decide_threads();                                                    // reads the environment, /proc/self
int choose_threads(int omp_num_threads, double cgroup_cpus, int affinity_cpus);  // 0 / 0: not set / no quota
int parse_omp_num_threads(const char *value);                           // its first entry, or 0 (unset, invalid)
double cgroup_cpu_quota(const char *proc_self);  // CPUs the quota allows (cpu.max or v1 cfs files); 0: no quota
int affinity_cpus();                             // sched_getaffinity's CPU count

}  // namespace d4j::cpu
#endif
