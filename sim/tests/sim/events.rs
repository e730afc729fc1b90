//! GetContainerEvents: every subscriber sees every event, per id in lifecycle order (SPEC §4.4,
//! B20, invariant 10).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use k8s_cri::v1::*;
use tokio::sync::mpsc::Receiver;

use ContainerEventType::*;

/// The events received so far, as the CRI messages a gRPC subscriber decodes: each is encoded
/// as the gRPC layer sends it and decoded, and the decoded message must equal the one built
/// from the same event in memory.
fn drain(receiver: &mut Receiver<crid::ContainerEvent>) -> Vec<ContainerEventResponse> {
    let mut events = vec![];
    while let Ok(event) = receiver.try_recv() {
        events.push(wire_roundtrip(&event));
    }
    events
}

fn wire_roundtrip(event: &crid::ContainerEvent) -> ContainerEventResponse {
    use prost::Message;
    let bytes = event.encode_to_vec();
    assert_eq!(bytes.len(), event.encoded_len(), "encoded_len of {event:?}");
    let decoded = ContainerEventResponse::decode(bytes.as_slice()).expect("the encoded event decodes");
    assert_eq!(decoded, event.to_response(), "decoded event");
    decoded
}

/// Per id, the event types in the order received.
fn by_id(events: &[ContainerEventResponse]) -> BTreeMap<String, Vec<ContainerEventType>> {
    let mut map: BTreeMap<String, Vec<ContainerEventType>> = BTreeMap::new();
    for event in events {
        let kind = ContainerEventType::try_from(event.container_event_type).expect("valid event type");
        map.entry(event.container_id.clone()).or_default().push(kind);
    }
    map
}

#[madsim::test]
async fn three_subscribers_each_see_every_event_in_order() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let mut subscribers: Vec<_> = (0..3).map(|_| node.svc.get_container_events(GetEventsRequest {}).unwrap()).collect();

    let pod = node.run_pod("events").await;
    let container = node.create(&pod, "events", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.start_container(&container).await;
    node.stop_container(&container, 10).await;
    node.remove_container(&container).await;
    let short = node.create(&pod, "events", "short", BUSYBOX_IMAGE, &["exit", "0", "50"]).await;
    node.start_container(&short).await;
    sleep(Duration::from_millis(200)).await;
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    sleep(Duration::from_millis(100)).await;

    let lifecycle = vec![ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent, ContainerDeletedEvent];
    let expected = BTreeMap::from([
        (pod.clone(), lifecycle.clone()),
        (container.clone(), lifecycle.clone()),
        (short.clone(), lifecycle),
    ]);
    let mut seen = vec![];
    for (index, subscriber) in subscribers.iter_mut().enumerate() {
        let events = drain(subscriber);
        assert_eq!(by_id(&events), expected, "subscriber {index}");
        seen.push(
            events.iter().map(|e| (e.container_id.clone(), e.container_event_type, e.created_at)).collect::<Vec<_>>(),
        );
    }
    assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "all subscribers got the same stream");
    let snapshot = node.svc.snapshot();
    assert_eq!(snapshot.events_sent, 12);
    assert_eq!(snapshot.events_dropped, 0);
}

/// Each event carries the pod's status and its containers' statuses as of sending.
#[madsim::test]
async fn events_embed_the_pod_and_container_statuses() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let mut events = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let pod = node.run_pod("payload").await;
    let container = node.create(&pod, "payload", "app", BUSYBOX_IMAGE, &["exit", "4", "100"]).await;
    node.start_container(&container).await;
    sleep(Duration::from_millis(500)).await;

    let received = drain(&mut events);
    let stopped = received
        .iter()
        .find(|e| e.container_id == container && e.container_event_type == ContainerStoppedEvent as i32)
        .expect("a STOPPED event for the container");
    let pod_status = stopped.pod_sandbox_status.as_ref().expect("the pod status is embedded");
    assert_eq!(pod_status.id, pod);
    assert_eq!(pod_status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(stopped.containers_statuses.len(), 1);
    let status = &stopped.containers_statuses[0];
    assert_eq!(status.id, container);
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 4));
    assert!(stopped.created_at > 0);
    let sandbox_created = received.iter().find(|e| e.container_id == pod).expect("sandbox events use the sandbox id");
    assert_eq!(sandbox_created.container_event_type, ContainerCreatedEvent as i32);
}

/// An event is encoded straight from the statuses it read; a gRPC subscriber decodes exactly
/// the message built from them, with every field of a status set: metadata, labels,
/// annotations, mounts, resources, a reason and message, an image known and then removed
/// (the status then names the config's image and the image id).
#[madsim::test]
async fn events_encode_as_the_status_messages_they_carry() {
    let node = Node::start().await;
    let image_id = node.pull(BUSYBOX_IMAGE).await;
    let mut events = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let mut pod_config = pod_config("wire");
    pod_config.labels = labels(&[("app", "wire"), ("tier", ""), ("ünïcode", "✓")]);
    pod_config.annotations = labels(&[("kubernetes.io/config.seen", &"y".repeat(300))]);
    pod_config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Pod as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = node.run_pod_with(pod_config).await;
    let mut config = container_config("full", BUSYBOX_IMAGE, &["exit", "137", "50"]);
    config.labels = labels(&[("app", "wire"), ("empty", ""), ("ünïcode", "✓")]);
    config.annotations = labels(&[("note", &"x".repeat(300))]);
    config.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/data".into(),
            readonly: true,
            ..Default::default()
        },
        Mount { container_path: "/tmp/x".into(), host_path: "/tmp".into(), ..Default::default() },
    ];
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let full = node.create_with(&pod, "wire", config).await;
    let plain = node.create(&pod, "wire", "plain", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.start_container(&full).await;
    node.start_container(&plain).await;
    sleep(Duration::from_millis(500)).await;
    node.stop_container(&plain, 0).await;
    node.svc.remove_image(RemoveImageRequest { image: Some(image_spec(&image_id)) }).await.expect("remove the image");
    node.remove_container(&plain).await;

    let received = drain(&mut events);
    let stopped = received
        .iter()
        .find(|e| e.container_id == full && e.container_event_type == ContainerStoppedEvent as i32)
        .expect("a STOPPED event for the full container");
    let status = stopped.containers_statuses.iter().find(|s| s.id == full).expect("its own status");
    assert_eq!(status.exit_code, 137);
    assert_eq!(status.labels.get("ünïcode").map(String::as_str), Some("✓"));
    assert_eq!(status.mounts.len(), 2);
    assert!(status.resources.as_ref().and_then(|r| r.linux.as_ref()).is_some(), "resources are carried");
    assert_eq!(status.image.as_ref().map(|i| i.image.as_str()), Some(BUSYBOX_IMAGE));
    // The pod's status in the event is what PodSandboxStatus reports (the pod is unchanged since).
    let pod_status = node.pod_status(&pod).await;
    assert_eq!(stopped.pod_sandbox_status.as_ref(), Some(&pod_status));
    assert_eq!(pod_status.labels.get("ünïcode").map(String::as_str), Some("✓"));
    assert!(pod_status.network.as_ref().is_some_and(|n| !n.ip.is_empty()), "a ready pod's IP is reported");
    assert!(pod_status.linux.is_some(), "the pod's namespaces are reported");
    // The last event (plain's DELETED) came after the image was removed: its statuses name the
    // config's image and the image id.
    let deleted = received.last().expect("events");
    assert_eq!(
        (deleted.container_id.as_str(), deleted.container_event_type),
        (plain.as_str(), ContainerDeletedEvent as i32)
    );
    let after = deleted.containers_statuses.iter().find(|s| s.id == full).expect("full is still in the pod");
    assert_eq!(after.image_ref, image_id, "the image id once the image is gone");
    assert_eq!(after.reason, "Error", "an exit without a reason is named by its code");
}

/// A subscriber that goes away does not disturb the others; one that joins late sees only
/// what happens after it joined.
#[madsim::test]
async fn subscribers_come_and_go() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let mut stays = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let leaves = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let pod = node.run_pod("churn").await;
    drop(leaves);
    let mut late = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let container = node.create(&pod, "churn", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;

    let early = by_id(&drain(&mut stays));
    assert_eq!(early[&pod], vec![ContainerCreatedEvent, ContainerStartedEvent]);
    assert_eq!(early[&container], vec![ContainerCreatedEvent]);
    let joined = by_id(&drain(&mut late));
    assert!(!joined.contains_key(&pod), "the late subscriber missed nothing it should see and got nothing older");
    assert_eq!(joined[&container], vec![ContainerCreatedEvent]);
    assert_eq!(node.svc.snapshot().events_dropped, 0, "a closed subscriber is not a drop");
}

/// A subscriber that does not read loses events past its buffer, and every drop is counted
/// (SPEC B20, invariant 10); the other subscribers are not affected.
#[madsim::test]
async fn a_full_subscriber_drops_and_counts() {
    cov_mark::check!(full_subscriber_event_dropped);
    let mut config = test_config();
    config.container_event_buffer = 3;
    let node = Node::start_with(config).await;
    node.pull(BUSYBOX_IMAGE).await;
    let mut slow = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let mut reader = node.svc.get_container_events(GetEventsRequest {}).unwrap();
    let mut read = vec![];
    let pod = node.run_pod("storm").await; // 2 events
    read.extend(drain(&mut reader));
    let container = node.create(&pod, "storm", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await; // 1
    read.extend(drain(&mut reader));
    node.start_container(&container).await; // 1
    read.extend(drain(&mut reader));
    node.stop_container(&container, 0).await; // 1
    read.extend(drain(&mut reader));
    assert_eq!(read.len(), 5, "the reading subscriber got everything");
    assert_eq!(drain(&mut slow).len(), 3, "the slow one kept its buffer's worth");
    let snapshot = node.svc.snapshot();
    assert_eq!((snapshot.events_sent, snapshot.events_dropped), (5, 2));
    let counters: serde_json::Value = serde_json::from_str(&node.verbose_status_info().await["counters"]).unwrap();
    assert_eq!(counters["containerEventsDropped"], 2);
    assert_eq!(counters["containerEventSubscribers"], 2);
}
