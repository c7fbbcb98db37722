//! Which CPUs this process may use, and pinning a process to one of them
//! (`sched_getaffinity` / `sched_setaffinity`).

use std::io;

/// The CPUs this process may run on; empty if the kernel would not say.
pub fn allowed() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes size_of bytes of it and
    // CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Two different CPUs for two processes, if this process may use two.
pub fn pair() -> Option<(usize, usize)> {
    match allowed()[..] {
        [a, b, ..] => Some((a, b)),
        _ => None,
    }
}

/// `sched_setaffinity(pid, {cpu})`; pid 0 is the calling process.
pub fn pin(pid: u32, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it (cpu is below
    // CPU_SETSIZE, checked above) and sched_setaffinity reads size_of bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_setaffinity(pid as libc::pid_t, size, &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
