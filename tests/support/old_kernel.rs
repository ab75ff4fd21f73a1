//! Linux 2.6.32 as a process sees it: seccomp filters that answer every x86_64 system call
//! added after 2.6.32 with ENOSYS, as that kernel does, so the static agent can be run as it
//! would run on CentOS 6 without booting one.
//!
//! perf_event_open (298) is the last system call of 2.6.32; recvmmsg (299) arrived in 2.6.33.
//! Numbers up to 511 are covered, past every table in use; numbers no kernel has assigned get
//! ENOSYS from any kernel. The one option of a 2.6.32 system call that the agent's network
//! stack sets and that kernel lacks, TCP_USER_TIMEOUT (2.6.37), is answered ENOPROTOOPT.
//!
//! What a filter cannot show: flags a call accepts today but 2.6.32 rejected (O_PATH, say),
//! and /proc or /sys files that did not exist yet. The agent reads neither.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The first x86_64 system call number Linux 2.6.32 does not have (recvmmsg, 2.6.33).
pub const FIRST_MISSING_SYSCALL: i64 = 299;
const LAST_COVERED_SYSCALL: i64 = 511;

/// The compiled filters, ready to install in a child between fork and exec.
pub struct Linux2632 {
    filters: Vec<BpfProgram>,
}

impl Linux2632 {
    pub fn new() -> Arc<Linux2632> {
        let missing: BTreeMap<i64, Vec<SeccompRule>> = (FIRST_MISSING_SYSCALL
            ..=LAST_COVERED_SYSCALL)
            .map(|nr| (nr, Vec::new()))
            .collect();
        let enosys = SeccompFilter::new(
            missing,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            TargetArch::x86_64,
        )
        .unwrap();
        let arg = |index, value: i32| {
            SeccompCondition::new(
                index,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                value as u64,
            )
            .unwrap()
        };
        let user_timeout = SeccompFilter::new(
            BTreeMap::from([(
                libc::SYS_setsockopt,
                vec![
                    SeccompRule::new(vec![
                        arg(1, libc::IPPROTO_TCP),
                        arg(2, libc::TCP_USER_TIMEOUT),
                    ])
                    .unwrap(),
                ],
            )]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOPROTOOPT as u32),
            TargetArch::x86_64,
        )
        .unwrap();
        // The ENOSYS filter goes on last: it answers seccomp (317) itself.
        Arc::new(Linux2632 {
            filters: [user_timeout, enosys]
                .into_iter()
                .map(|f| BpfProgram::try_from(f).unwrap())
                .collect(),
        })
    }

    /// Installs the filters in the calling thread only (and what it later spawns).
    pub fn apply_to_this_thread(&self) {
        for filter in &self.filters {
            seccompiler::apply_filter(filter).unwrap();
        }
    }

    /// Makes `cmd` run under the filters: installed in the child after fork, before exec, so
    /// they bind the program and everything it starts.
    #[allow(unsafe_code)]
    pub fn apply_on_exec(self: &Arc<Self>, cmd: &mut Command) {
        let this = Arc::clone(self);
        // SAFETY: the hook only makes prctl and seccomp system calls on data built before the
        // fork; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                for filter in &this.filters {
                    seccompiler::apply_filter(filter)
                        .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
                }
                Ok(())
            });
        }
    }
}
