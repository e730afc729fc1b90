//! Who a container runs as and which namespaces it joins, decided by the core and seen in the
//! record the fake containerd holds: users and groups resolved against the image's own account
//! files (read through the containerd port), the CRI's PID namespace modes.

use crate::common::*;
use crid::ErrorKind;
use crid::ports::ResolvedUser;
use crid_sim::fakes::chain_ids;
use k8s_cri::v1::*;

fn security(context: LinuxContainerSecurityContext) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig { security_context: Some(context), ..Default::default() })
}

/// Gives busybox's rootfs an account database: `app` (1000:1000), member of `extra` (2000).
async fn busybox_with_accounts(node: &Node) {
    node.pull(BUSYBOX_IMAGE).await;
    let image = node.world.containerd.registry_image(BUSYBOX_IMAGE).unwrap();
    let top = chain_ids(&image.diff_ids).last().cloned().unwrap();
    let containerd = &node.world.containerd;
    containerd.set_rootfs_file(&top, "etc/passwd", b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
    containerd.set_rootfs_file(&top, "etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n");
}

fn resolved(node: &Node, id: &str) -> Option<ResolvedUser> {
    node.world.containerd.containers()[id].spec.resolved_user.clone()
}

#[madsim::test]
async fn users_resolve_against_the_images_accounts() {
    let node = Node::start().await;
    busybox_with_accounts(&node).await;
    let pod = node.run_pod("who").await;

    let root = node.create(&pod, "who", "root", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    assert_eq!(resolved(&node, &root), Some(ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0] }));

    let mut by_name = container_config("named", BUSYBOX_IMAGE, &["sleep", "inf"]);
    by_name.linux = security(LinuxContainerSecurityContext {
        run_as_username: "app".into(),
        supplemental_groups: vec![3000],
        ..Default::default()
    });
    let named = node.create_with(&pod, "who", by_name).await;
    assert_eq!(
        resolved(&node, &named),
        Some(ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![1000, 2000, 3000] })
    );

    let mut by_uid = container_config("numeric", BUSYBOX_IMAGE, &["sleep", "inf"]);
    by_uid.linux = security(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        run_as_group: Some(Int64Value { value: 42 }),
        ..Default::default()
    });
    let numeric = node.create_with(&pod, "who", by_uid).await;
    assert_eq!(resolved(&node, &numeric), Some(ResolvedUser { uid: 1000, gid: 42, additional_gids: vec![42, 2000] }));

    // A name the image does not know fails that call alone, and leaves nothing behind.
    let mut unknown = container_config("ghost", BUSYBOX_IMAGE, &["sleep", "inf"]);
    unknown.linux =
        security(LinuxContainerSecurityContext { run_as_username: "nobody-here".into(), ..Default::default() });
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(unknown),
        sandbox_config: Some(pod_config("who")),
    };
    assert_eq!(err_kind(node.svc.create_container(request).await), ErrorKind::InvalidArgument);
    assert_eq!(node.world.containerd.containers().len(), 4, "the pod's sandbox and the three containers");
    let names = node.svc.snapshot().container_names;
    assert!(!names.iter().any(|(name, _)| name.contains("ghost")), "the name is released: {names:?}");
    assert_eq!(names.len(), 3);
}

#[madsim::test]
async fn pid_namespace_modes() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let pod = node.run_pod("pids").await;
    let mut own = container_config("own", BUSYBOX_IMAGE, &["sleep", "inf"]);
    own.linux = security(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
        ..Default::default()
    });
    let target = node.create_with(&pod, "pids", own).await;
    let spec = node.world.containerd.containers()[&target].spec.clone();
    assert!(spec.own_pid_namespace && spec.target_pid == 0 && !spec.host_pid);

    let debugger = |name: &str| {
        let mut config = container_config(name, BUSYBOX_IMAGE, &["sleep", "inf"]);
        config.linux = security(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Target as i32,
                target_id: target.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    // TARGET needs its target running.
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(debugger("early")),
        sandbox_config: Some(pod_config("pids")),
    };
    assert_eq!(err_kind(node.svc.create_container(request).await), ErrorKind::FailedPrecondition);
    node.start_container(&target).await;
    let target_pid = node.world.containerd.tasks()[&target].pid;
    let joined = node.create_with(&pod, "pids", debugger("debugger")).await;
    let spec = node.world.containerd.containers()[&joined].spec.clone();
    assert_eq!((spec.target_pid, spec.own_pid_namespace), (target_pid, false));
}
