//! crid's RuntimeDefault seccomp profile, written here: every syscall is allowed except those
//! that reach kernel state a container must not touch (modules, clocks, reboot and kexec, swap,
//! accounting, raw I/O ports, other processes' memory, mounts and namespaces, the kernel
//! keyring, obsolete interfaces). They fail with EPERM, so programs see "operation not
//! permitted" as for a missing capability. A refusal that a capability governs is lifted when
//! the container is given that capability (or "ALL"), so adding CAP_SYS_ADMIN still lets a
//! container mount. Privileged containers are never confined (decided by the caller).
//!
//! This is a refusal list over an allowing default, not an allow list: a syscall newer than this
//! list is allowed. The list is what containers are kept from; the capabilities the runtime
//! drops by default guard most of it a second time.

/// Each refused syscall, with the capabilities any one of which lifts the refusal.
const REFUSED: &[(&str, &[&str])] = &[
    // Kernel modules.
    ("init_module", &["CAP_SYS_MODULE"]),
    ("finit_module", &["CAP_SYS_MODULE"]),
    ("delete_module", &["CAP_SYS_MODULE"]),
    ("create_module", &["CAP_SYS_MODULE"]),
    ("query_module", &["CAP_SYS_MODULE"]),
    ("get_kernel_syms", &["CAP_SYS_MODULE"]),
    // Reboot and kexec.
    ("reboot", &["CAP_SYS_BOOT"]),
    ("kexec_load", &["CAP_SYS_BOOT"]),
    ("kexec_file_load", &["CAP_SYS_BOOT"]),
    // The system clock.
    ("settimeofday", &["CAP_SYS_TIME"]),
    ("stime", &["CAP_SYS_TIME"]),
    ("clock_settime", &["CAP_SYS_TIME"]),
    ("clock_settime64", &["CAP_SYS_TIME"]),
    ("clock_adjtime", &["CAP_SYS_TIME"]),
    ("clock_adjtime64", &["CAP_SYS_TIME"]),
    // Other processes' memory and tracing.
    ("ptrace", &["CAP_SYS_PTRACE"]),
    ("process_vm_readv", &["CAP_SYS_PTRACE"]),
    ("process_vm_writev", &["CAP_SYS_PTRACE"]),
    ("kcmp", &["CAP_SYS_PTRACE"]),
    ("userfaultfd", &["CAP_SYS_PTRACE"]),
    // Process accounting, raw I/O ports, the kernel log, NUMA policy of the host.
    ("acct", &["CAP_SYS_PACCT"]),
    ("iopl", &["CAP_SYS_RAWIO"]),
    ("ioperm", &["CAP_SYS_RAWIO"]),
    ("syslog", &["CAP_SYSLOG"]),
    ("mbind", &["CAP_SYS_NICE"]),
    ("set_mempolicy", &["CAP_SYS_NICE"]),
    ("move_pages", &["CAP_SYS_NICE"]),
    // Mounts, namespaces, swap, quotas, handles, eBPF and perf.
    ("mount", &["CAP_SYS_ADMIN"]),
    ("umount", &["CAP_SYS_ADMIN"]),
    ("umount2", &["CAP_SYS_ADMIN"]),
    ("pivot_root", &["CAP_SYS_ADMIN"]),
    ("unshare", &["CAP_SYS_ADMIN"]),
    ("setns", &["CAP_SYS_ADMIN"]),
    ("fsopen", &["CAP_SYS_ADMIN"]),
    ("fsconfig", &["CAP_SYS_ADMIN"]),
    ("fsmount", &["CAP_SYS_ADMIN"]),
    ("fspick", &["CAP_SYS_ADMIN"]),
    ("move_mount", &["CAP_SYS_ADMIN"]),
    ("open_tree", &["CAP_SYS_ADMIN"]),
    ("swapon", &["CAP_SYS_ADMIN"]),
    ("swapoff", &["CAP_SYS_ADMIN"]),
    ("quotactl", &["CAP_SYS_ADMIN"]),
    ("lookup_dcookie", &["CAP_SYS_ADMIN"]),
    ("fanotify_init", &["CAP_SYS_ADMIN"]),
    ("name_to_handle_at", &["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"]),
    ("open_by_handle_at", &["CAP_DAC_READ_SEARCH"]),
    ("bpf", &["CAP_SYS_ADMIN", "CAP_BPF"]),
    ("perf_event_open", &["CAP_SYS_ADMIN", "CAP_PERFMON"]),
    // The kernel keyring is not namespaced.
    ("add_key", &[]),
    ("request_key", &[]),
    ("keyctl", &[]),
    // Obsolete or unsafe interfaces no container needs.
    ("uselib", &[]),
    ("ustat", &[]),
    ("sysfs", &[]),
    ("_sysctl", &[]),
    ("nfsservctl", &[]),
    ("vm86", &[]),
    ("vm86old", &[]),
];

/// The architectures the filter covers: the host's and the compatibility modes it can run.
const ARCHITECTURES: &[&str] =
    &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];

/// EPERM, as a missing capability reports it.
const EPERM: u32 = 1;

/// The syscalls RuntimeDefault refuses to a container given `add_capabilities` (CRI names,
/// with or without the `CAP_` prefix, or "ALL").
pub fn refused_syscalls(add_capabilities: &[String]) -> Vec<&'static str> {
    let added = |cap: &str| {
        add_capabilities.iter().any(|a| {
            a.eq_ignore_ascii_case("ALL")
                || a.eq_ignore_ascii_case(cap)
                || cap.strip_prefix("CAP_").is_some_and(|short| a.eq_ignore_ascii_case(short))
        })
    };
    REFUSED.iter().filter(|(_, lifted_by)| !lifted_by.iter().any(|cap| added(cap))).map(|(name, _)| *name).collect()
}

/// The profile as OCI runtime-spec JSON (`linux.seccomp`).
pub fn runtime_default_profile(add_capabilities: &[String]) -> String {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES,
        "syscalls": [{
            "names": refused_syscalls(add_capabilities),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
        }],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_lift_only_their_refusals() {
        let none = refused_syscalls(&[]);
        assert!(none.contains(&"mount") && none.contains(&"ptrace") && none.contains(&"keyctl"));
        assert!(!none.contains(&"sethostname"), "sethostname is guarded by CAP_SYS_ADMIN itself");
        let admin = refused_syscalls(&["SYS_ADMIN".into()]);
        assert!(!admin.contains(&"mount") && !admin.contains(&"bpf") && admin.contains(&"ptrace"));
        let with_prefix = refused_syscalls(&["CAP_SYS_PTRACE".into()]);
        assert!(!with_prefix.contains(&"ptrace") && with_prefix.contains(&"mount"));
        let all = refused_syscalls(&["ALL".into()]);
        assert_eq!(
            all,
            [
                "add_key",
                "request_key",
                "keyctl",
                "uselib",
                "ustat",
                "sysfs",
                "_sysctl",
                "nfsservctl",
                "vm86",
                "vm86old"
            ]
        );
    }

    #[test]
    fn the_profile_is_oci_json() {
        let profile: serde_json::Value = serde_json::from_str(&runtime_default_profile(&[])).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(profile["syscalls"][0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["syscalls"][0]["errnoRet"], 1);
        assert_eq!(profile["syscalls"][0]["names"].as_array().unwrap().len(), REFUSED.len());
    }
}
