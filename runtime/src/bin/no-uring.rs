//! `no-uring PROGRAM [ARGS...]`: runs PROGRAM with the io_uring system calls denied (EPERM) by a
//! seccomp filter, as AWS Fargate's profile does. Tests use it to show that `--io=auto` falls
//! back to epoll and serves.

use std::os::unix::process::CommandExt;
use std::process::Command;

// io_uring_setup, io_uring_enter, io_uring_register: the same numbers on every architecture
// (they were added after the system call tables were unified).
const DENIED: [u32; 3] = [425, 426, 427];

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf: 0,
        k,
    }
}

fn deny_io_uring() -> std::io::Result<()> {
    let nr_offset = 0; // offsetof(struct seccomp_data, nr)
    let mut prog = vec![stmt(
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        nr_offset,
    )];
    for (i, nr) in DENIED.iter().enumerate() {
        // Jump over the remaining comparisons and the ALLOW to the ERRNO return.
        prog.push(jeq(*nr, (DENIED.len() - i) as u8));
    }
    prog.push(stmt(libc::BPF_RET as u16, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(
        libc::BPF_RET as u16,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: standard seccomp installation: no_new_privs first, then a filter program that
    // lives until the prctl returns (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: no-uring PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    if let Err(e) = deny_io_uring() {
        eprintln!("no-uring: installing the seccomp filter failed: {e}");
        std::process::exit(1);
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!("no-uring: exec {}: {err}", program.to_string_lossy());
    std::process::exit(127);
}
