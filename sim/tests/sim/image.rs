//! ImageService RPCs: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo, and pull
//! deduplication under concurrency (SPEC §1, §5, B21).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use crid::ErrorKind;
use crid::ports::{Containerd, ResolvedImage, SnapshotUsage};
use crid_sim::fakes::{FaultAction, FetchPlan, Holdings, PAUSE_IMAGE, SnapshotKind, chain_ids};
use k8s_cri::v1::*;

/// What the registry serves for `reference` (read from the fake registry, not from the CRI).
async fn registry_image(node: &Node, reference: &str) -> ResolvedImage {
    node.world.containerd.registry_image(reference).expect("registry image")
}

fn repository(reference: &str) -> &str {
    reference.rsplit_once(':').map_or(reference, |(repo, _)| repo)
}

async fn image_status(node: &Node, image: &str) -> Option<Image> {
    node.svc.image_status(ImageStatusRequest { image: Some(image_spec(image)), verbose: false }).await.unwrap().image
}

/// PullImage normalises the reference and returns ImageRef = the config digest; it creates the
/// tag, digest and id references in containerd, labelled managed (SPEC §5.1).
#[madsim::test]
async fn pull_image_returns_the_config_digest() {
    let node = Node::start().await;
    let expected = registry_image(&node, BUSYBOX_IMAGE).await;
    let config_digest = expected.config.digest.clone();
    assert!(config_digest.starts_with("sha256:"));
    for reference in ["busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest", BUSYBOX_IMAGE]
    {
        assert_eq!(node.pull(reference).await, config_digest, "pull {reference}");
    }
    let records = node.world.containerd.images();
    let names: BTreeSet<String> = records.keys().cloned().collect();
    let digest_ref = format!("{}@{}", repository(BUSYBOX_IMAGE), expected.manifest.digest);
    assert_eq!(names, BTreeSet::from([BUSYBOX_IMAGE.to_string(), digest_ref.clone(), config_digest.clone()]));
    for record in records.values() {
        assert_eq!(
            record.labels.get("io.cri-containerd.image").map(String::as_str),
            Some("managed"),
            "{}",
            record.name
        );
        assert_eq!(record.target.digest, expected.manifest.digest);
    }
    // Unpacked: every chain id is committed.
    let snapshots = node.world.containerd.snapshots(SNAPSHOTTER);
    for chain in chain_ids(&expected.diff_ids) {
        assert_eq!(snapshots.get(&chain).map(|s| s.kind), Some(SnapshotKind::Committed), "{chain}");
    }
    // Pulling again fetches nothing new.
    let fetched = node.world.containerd.total_fetches();
    node.pull(BUSYBOX_IMAGE).await;
    assert_eq!(node.world.containerd.total_fetches(), fetched);
    // The digest reference resolves locally to the same image.
    assert_eq!(image_status(&node, &digest_ref).await.map(|i| i.id), Some(config_digest.clone()));
    assert!(node.world.containerd.leases().is_empty(), "no pull lease is left");
}

#[madsim::test]
async fn pull_image_errors() {
    let node = Node::start().await;
    let no_spec = node.svc.pull_image(PullImageRequest::default()).await;
    assert_eq!(err_kind(no_spec), ErrorKind::InvalidArgument, "no image spec");
    let cases: &[(&str, ErrorKind)] = &[
        ("", ErrorKind::InvalidArgument),
        ("docker/Docker", ErrorKind::InvalidArgument),
        // An uppercase first component is a registry host, as in containerd: valid, but unknown.
        ("UPPER/case", ErrorKind::NotFound),
        ("a:b:c", ErrorKind::InvalidArgument),
        ("busybox@sha256:abc", ErrorKind::InvalidArgument),
        ("busybox:bad tag", ErrorKind::InvalidArgument),
        // An image id is not a reference; with the `sha256:` prefix it is a tag of library/sha256.
        ("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ErrorKind::InvalidArgument),
        ("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ErrorKind::NotFound),
        ("docker.io/library/nope:1", ErrorKind::NotFound),
    ];
    let too_long = "a".repeat(5000);
    let cases = [cases, &[(too_long.as_str(), ErrorKind::InvalidArgument)]].concat();
    for (reference, kind) in &cases {
        let result =
            node.svc.pull_image(PullImageRequest { image: Some(image_spec(reference)), ..Default::default() }).await;
        assert_eq!(err_kind(result), *kind, "pull {reference:?}");
    }
    let snapshot = node.svc.snapshot();
    assert!(snapshot.image_refs.is_empty());
    assert!(snapshot.lock_keys.is_empty(), "{:?}", snapshot.lock_keys);
    assert_eq!(snapshot.pulls_in_flight, 0);
    assert!(node.world.containerd.images().is_empty());
    assert!(node.world.containerd.leases().is_empty());
}

#[madsim::test]
async fn list_images_shows_every_pulled_image() {
    let node = Node::start().await;
    assert!(node.svc.list_images(ListImagesRequest::default()).await.unwrap().images.is_empty());
    let busybox = node.pull(BUSYBOX_IMAGE).await;
    let nginx = node.pull("nginx").await;
    let images = node.svc.list_images(ListImagesRequest::default()).await.unwrap().images;
    assert_eq!(sorted_ids(images.iter().map(|i| i.id.clone())), sorted_ids([busybox.clone(), nginx.clone()]));
    for (reference, id) in [(BUSYBOX_IMAGE, &busybox), (NGINX_IMAGE, &nginx)] {
        let image = images.iter().find(|i| &i.id == id).unwrap();
        let expected = registry_image(&node, reference).await;
        assert_eq!(image.repo_tags, vec![reference.to_string()]);
        assert_eq!(image.repo_digests, vec![format!("{}@{}", repository(reference), expected.manifest.digest)]);
        // containerd's size: the manifest, the config and the layers.
        let size: u64 = expected.layers.iter().map(|l| l.size_bytes).sum::<u64>()
            + expected.config.size_bytes
            + expected.manifest.size_bytes;
        assert_eq!(image.size, size, "{reference}");
    }
    let filtered = |image: &str| ListImagesRequest { filter: Some(ImageFilter { image: Some(image_spec(image)) }) };
    let cases: &[(&str, Vec<&String>)] =
        &[("nginx", vec![&nginx]), (BUSYBOX_IMAGE, vec![&busybox]), ("docker.io/library/nope:1", vec![])];
    for (image, expected) in cases {
        let got = node.svc.list_images(filtered(image)).await.unwrap().images;
        assert_eq!(
            sorted_ids(got.into_iter().map(|i| i.id)),
            sorted_ids(expected.iter().map(|s| s.to_string())),
            "filter {image}"
        );
    }
}

/// The sandbox image is pinned, as containerd pins it, so that kubelet's image garbage
/// collection never removes it; other images are not.
#[madsim::test]
async fn only_the_sandbox_image_is_pinned() {
    let node = Node::start().await;
    let busybox = node.pull(BUSYBOX_IMAGE).await;
    let pause = node.pull(crid_sim::fakes::PAUSE_IMAGE).await;
    let images = node.svc.list_images(ListImagesRequest::default()).await.unwrap().images;
    let pinned = |id: &String| images.iter().find(|i| &i.id == id).unwrap().pinned;
    assert!(pinned(&pause) && !pinned(&busybox), "{images:?}");
    assert!(image_status(&node, &pause).await.unwrap().pinned);
    assert!(!image_status(&node, BUSYBOX_IMAGE).await.unwrap().pinned);
}

/// ImageStatus resolves by reference, short name, id or id prefix; an unknown image is an
/// empty response, not an error (SPEC §5.3).
#[madsim::test]
async fn image_status_resolves_and_unknown_is_empty() {
    let node = Node::start().await;
    let id = node.pull(BUSYBOX_IMAGE).await;
    let hex = id.strip_prefix("sha256:").unwrap();
    for reference in [BUSYBOX_IMAGE, "busybox", "busybox:latest", id.as_str(), &id[..20], &hex[..12]] {
        let image = image_status(&node, reference).await.unwrap_or_else(|| panic!("{reference} resolves"));
        assert_eq!(image.id, id, "{reference}");
        assert_eq!(image.repo_tags, vec![BUSYBOX_IMAGE.to_string()]);
    }
    for unknown in ["nginx", "docker.io/library/nope:1", "sha256:ffff", "Not A Ref"] {
        assert_eq!(image_status(&node, unknown).await, None, "{unknown}");
    }
    let verbose =
        node.svc.image_status(ImageStatusRequest { image: Some(image_spec("busybox")), verbose: true }).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let expected = registry_image(&node, BUSYBOX_IMAGE).await;
    assert_eq!(info["chainID"], *chain_ids(&expected.diff_ids).last().unwrap());
    assert_eq!(
        err_kind(node.svc.image_status(ImageStatusRequest { image: None, verbose: false }).await),
        ErrorKind::InvalidArgument
    );
}

/// RemoveImage deletes every reference (content is then collected); an unknown image is OK
/// (SPEC §5.3, invariant 17).
#[madsim::test]
async fn remove_image_deletes_every_reference() {
    let node = Node::start().await;
    let remove = |image: &str| RemoveImageRequest { image: Some(image_spec(image)) };
    let cases: &[(&str, &str)] = &[("by tag", BUSYBOX_IMAGE), ("by short name", "busybox"), ("by id", "")];
    for (name, how) in cases {
        let id = node.pull(BUSYBOX_IMAGE).await;
        let target = if how.is_empty() { id.clone() } else { how.to_string() };
        node.svc.remove_image(remove(&target)).await.unwrap();
        assert_eq!(image_status(&node, &id).await, None, "{name}");
        assert_eq!(image_status(&node, BUSYBOX_IMAGE).await, None, "{name}");
        assert!(node.world.containerd.images().is_empty(), "{name}: {:?}", node.world.containerd.images().keys());
        assert!(node.world.containerd.content().is_empty(), "{name}: content collected");
        assert!(node.svc.snapshot().image_refs.is_empty(), "{name}");
        // Again: already gone, still OK.
        node.svc.remove_image(remove(&target)).await.unwrap();
    }
    node.svc.remove_image(remove("docker.io/library/nope:1")).await.unwrap();
    assert_eq!(err_kind(node.svc.remove_image(RemoveImageRequest { image: None }).await), ErrorKind::InvalidArgument);

    // Removing one image leaves the other one, and its shared base layer, alone.
    let busybox = node.pull(BUSYBOX_IMAGE).await;
    let nginx = node.pull(NGINX_IMAGE).await;
    node.svc.remove_image(remove(BUSYBOX_IMAGE)).await.unwrap();
    assert_eq!(image_status(&node, &busybox).await, None);
    assert_eq!(image_status(&node, NGINX_IMAGE).await.map(|i| i.id), Some(nginx));
    let expected = registry_image(&node, NGINX_IMAGE).await;
    let content = node.world.containerd.content();
    for layer in &expected.layers {
        assert!(content.contains_key(&layer.digest), "nginx layer {} must survive", layer.digest);
    }
}

/// ImageFsInfo reports the snapshotter's usage, refreshed every stats_collect_period (SPEC §5.3).
#[madsim::test]
async fn image_fs_info_reports_snapshot_usage() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    node.pull(PAUSE_IMAGE).await;
    sleep(Duration::from_secs(11)).await;
    let info = node.svc.image_fs_info(ImageFsInfoRequest {}).await.unwrap();
    assert_eq!(info.image_filesystems.len(), 1);
    let usage = &info.image_filesystems[0];
    assert_eq!(usage.fs_id.as_ref().unwrap().mountpoint, "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs");
    let expected = SnapshotUsage::total(node.world.containerd.snapshots_usage(SNAPSHOTTER).await.unwrap().values());
    assert_eq!(usage.used_bytes.unwrap().value, expected.size_bytes);
    assert_eq!(usage.inodes_used.unwrap().value, expected.inodes);
    assert!(expected.size_bytes >= 2_200_000 + 48_000 + 311_000, "{expected:?}");
    assert!(usage.timestamp > 0);
}

/// 20 concurrent pulls of one image: every blob fetched once, every layer applied once, and
/// the same ImageRef for all (B21, invariant 15).
/// A re-pull (kubelet's Always policy) finds its references as the first pull left them: it
/// reads each and creates or updates none. A reference another client changed (here: the
/// managed label taken off) is written back (SPEC §5.1).
#[madsim::test]
async fn a_repull_reads_its_references_and_rewrites_only_a_changed_one() {
    cov_mark::check!(image_reference_refreshed_without_create);
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    // The image events of the first pull are handled (each reads its reference) before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let creates = node.faults.calls(FaultSite::ContainerdCreateImage);
    let updates = node.faults.calls(FaultSite::ContainerdUpdateImage);
    let reads = node.faults.calls(FaultSite::ContainerdGetImage);
    node.pull(BUSYBOX_IMAGE).await;
    assert_eq!(node.faults.calls(FaultSite::ContainerdCreateImage), creates, "a re-pull creates no reference");
    assert_eq!(node.faults.calls(FaultSite::ContainerdUpdateImage), updates, "nor rewrites one that is right");
    assert_eq!(node.faults.calls(FaultSite::ContainerdGetImage), reads + 3, "it reads its three references");

    let mut tag = node.world.containerd.images()[BUSYBOX_IMAGE].clone();
    tag.labels.clear();
    node.world.containerd.update_image(&tag).await.expect("another client updates the tag");
    node.pull(BUSYBOX_IMAGE).await;
    let tag = &node.world.containerd.images()[BUSYBOX_IMAGE];
    assert_eq!(tag.labels.get("io.cri-containerd.image").map(String::as_str), Some("managed"), "label written back");
    assert_eq!(node.faults.calls(FaultSite::ContainerdUpdateImage), updates + 2, "the other client's and the pull's");
    assert!(node.world.containerd.leases().is_empty(), "no pull lease is left");
}

#[madsim::test]
async fn a_repull_finds_its_top_snapshot_and_unpacks_nothing() {
    let node = Node::start().await;
    let image = registry_image(&node, NGINX_IMAGE).await;
    assert!(image.layers.len() > 1, "a multi-layer image");
    let chains = chain_ids(&image.diff_ids);
    node.pull(NGINX_IMAGE).await;
    let looks = node.faults.calls(FaultSite::ContainerdSnapshotExists);
    let applies = node.world.containerd.total_applies();
    {
        cov_mark::check!(pull_found_its_top_snapshot);
        node.pull(NGINX_IMAGE).await;
    }
    assert_eq!(
        node.faults.calls(FaultSite::ContainerdSnapshotExists),
        looks + 1,
        "only the top snapshot is looked for"
    );
    assert_eq!(node.world.containerd.total_applies(), applies, "nothing is unpacked again");
    let snapshots = node.world.containerd.snapshots("overlayfs");
    for chain in &chains {
        assert!(snapshots.contains_key(chain), "snapshot {chain} is still there");
    }
    assert!(node.world.containerd.leases().is_empty(), "no pull lease is left");
    // Gone meanwhile (the image removed and collected), the snapshots are unpacked again.
    node.svc.remove_image(RemoveImageRequest { image: Some(image_spec(NGINX_IMAGE)) }).await.expect("remove");
    assert!(!node.world.containerd.snapshots("overlayfs").contains_key(chains.last().unwrap()), "collected");
    node.pull(NGINX_IMAGE).await;
    assert_eq!(node.world.containerd.total_applies(), applies + chains.len() as u64, "each layer unpacked");
}

#[madsim::test]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    cov_mark::check!(pull_joined_in_flight);
    let node = Node::start().await;
    node.world.containerd.set_fetch_latency(Duration::from_millis(300));
    node.world.containerd.set_apply_latency(Duration::from_millis(100));
    let pulls: Vec<_> = (0..20)
        .map(|i| {
            let svc = node.svc.clone();
            // Different spellings of one reference still share the pull.
            let reference = if i % 2 == 0 { "busybox" } else { BUSYBOX_IMAGE };
            tokio::spawn(async move {
                svc.pull_image(PullImageRequest { image: Some(image_spec(reference)), ..Default::default() }).await
            })
        })
        .collect();
    let mut refs = BTreeSet::new();
    for pull in pulls {
        refs.insert(pull.await.unwrap().unwrap().image_ref);
    }
    let expected = registry_image(&node, BUSYBOX_IMAGE).await;
    assert_eq!(refs, BTreeSet::from([expected.config.digest.clone()]), "one ImageRef for all pulls");
    let content = node.world.containerd.content();
    for blob in std::iter::once(&expected.config).chain(&expected.layers) {
        assert!(content.contains_key(&blob.digest), "{} is in the content store", blob.digest);
    }
    for digest in content.keys() {
        assert_eq!(node.world.containerd.fetch_count(digest), 1, "blob {digest} fetched once");
    }
    assert_eq!(node.world.containerd.max_concurrent_fetch_same_blob(), 1);
    for chain in chain_ids(&expected.diff_ids) {
        assert_eq!(node.world.containerd.apply_count(SNAPSHOTTER, &chain), 1, "layer {chain} applied once");
    }
    assert_quiescent(&node);
}

/// Concurrent pulls of busybox and nginx, which share their base layer: the shared blob is
/// fetched once and its snapshot applied once (B21).
#[madsim::test]
async fn concurrent_pulls_sharing_a_layer_fetch_it_once() {
    let node = Node::start().await;
    node.world.containerd.set_fetch_latency(Duration::from_millis(200));
    node.world.containerd.set_apply_latency(Duration::from_millis(50));
    let busybox = registry_image(&node, BUSYBOX_IMAGE).await;
    let nginx = registry_image(&node, NGINX_IMAGE).await;
    assert_eq!(busybox.layers[0].digest, nginx.layers[0].digest, "the images share their base layer");
    let pulls: Vec<_> = (0..10)
        .flat_map(|_| [BUSYBOX_IMAGE, NGINX_IMAGE])
        .map(|reference| {
            let svc = node.svc.clone();
            tokio::spawn(async move {
                let response =
                    svc.pull_image(PullImageRequest { image: Some(image_spec(reference)), ..Default::default() }).await;
                (reference, response.unwrap().image_ref)
            })
        })
        .collect();
    for pull in pulls {
        let (reference, image_ref) = pull.await.unwrap();
        let expected = if reference == BUSYBOX_IMAGE { &busybox.config.digest } else { &nginx.config.digest };
        assert_eq!(&image_ref, expected, "{reference}");
    }
    let shared = &busybox.layers[0].digest;
    assert_eq!(node.world.containerd.fetch_count(shared), 1, "the shared layer is fetched once");
    for digest in node.world.containerd.content().keys() {
        assert_eq!(node.world.containerd.fetch_count(digest), 1, "blob {digest} fetched once");
    }
    let shared_chain = &chain_ids(&busybox.diff_ids)[0];
    assert_eq!(shared_chain, &chain_ids(&nginx.diff_ids)[0]);
    assert_eq!(node.world.containerd.apply_count(SNAPSHOTTER, shared_chain), 1, "the shared snapshot is applied once");
    assert_eq!(node.world.containerd.max_concurrent_apply_same_snapshot(), 1);
    let distinct_chains: BTreeSet<String> =
        chain_ids(&busybox.diff_ids).into_iter().chain(chain_ids(&nginx.diff_ids)).collect();
    assert_eq!(node.world.containerd.total_applies(), distinct_chains.len() as u64);
    assert_quiescent(&node);
}

fn assert_quiescent(node: &Node) {
    let snapshot = node.svc.snapshot();
    assert!(snapshot.lock_keys.is_empty(), "keyed locks left: {:?}", snapshot.lock_keys);
    assert_eq!(snapshot.pulls_in_flight, 0);
    assert_eq!(node.world.containerd.pulls_in_flight(), 0);
    assert!(node.world.containerd.leases().is_empty(), "leases left: {:?}", node.world.containerd.leases());
}

/// A caller that gives up on a pull does not cancel it for the others sharing it; nothing is
/// left locked or leased afterwards.
#[madsim::test]
async fn a_cancelled_pull_does_not_cancel_the_others() {
    let node = Node::start().await;
    node.world.containerd.set_fetch_latency(Duration::from_secs(2));
    let pull = |svc: std::sync::Arc<crid::CriService>| async move {
        svc.pull_image(PullImageRequest { image: Some(image_spec(NGINX_IMAGE)), ..Default::default() }).await
    };
    let others: Vec<_> = (0..3).map(|_| tokio::spawn(pull(node.svc.clone()))).collect();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), pull(node.svc.clone())).await.is_err(),
        "one caller gave up"
    );
    let expected = registry_image(&node, NGINX_IMAGE).await.config.digest;
    for other in others {
        assert_eq!(other.await.unwrap().unwrap().image_ref, expected);
    }
    assert_eq!(image_status(&node, NGINX_IMAGE).await.map(|i| i.id), Some(expected));
    assert_quiescent(&node);
}

/// Nothing is left that no image or container references (invariant 30's end state).
fn assert_disk_released(node: &Node) {
    assert!(node.world.containerd.leases().is_empty(), "leases left: {:?}", node.world.containerd.leases());
    assert_eq!(node.world.containerd.unreferenced(false), Holdings::default(), "garbage left");
}

/// RemoveImage frees what only the image held; a container's rootfs keeps its snapshots (not
/// its blobs) until the container goes, and a layer shared with another image stays with it
/// (§5.4, B30).
#[madsim::test]
async fn remove_image_frees_what_only_it_held() {
    let node = Node::start().await;
    let remove = |image: &str| RemoveImageRequest { image: Some(image_spec(image)) };
    let busybox = registry_image(&node, BUSYBOX_IMAGE).await;
    let nginx = registry_image(&node, NGINX_IMAGE).await;
    let pod = node.run_pod("gc").await;
    node.pull(BUSYBOX_IMAGE).await;
    let container = node.create(&pod, "gc", "c", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.pull(NGINX_IMAGE).await;
    assert_disk_released(&node);
    node.svc.remove_image(remove(BUSYBOX_IMAGE)).await.unwrap();
    let content = node.world.containerd.content();
    assert!(!content.contains_key(&busybox.config.digest), "busybox's config goes at once");
    assert!(content.contains_key(&busybox.layers[0].digest), "the layer shared with nginx stays");
    let chains = chain_ids(&busybox.diff_ids);
    let snapshots = node.world.containerd.snapshots(SNAPSHOTTER);
    assert!(chains.iter().all(|chain| snapshots.contains_key(chain)), "the container's rootfs holds its chain");
    assert_disk_released(&node);
    node.stop_container(&container, 0).await;
    node.remove_container(&container).await;
    node.removals_settled().await;
    let snapshots = node.world.containerd.snapshots(SNAPSHOTTER);
    assert!(!snapshots.contains_key(chains.last().unwrap()), "busybox's top layer went with the container");
    assert!(snapshots.contains_key(&chains[0]), "the shared base layer stays for nginx");
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    for image in [NGINX_IMAGE, PAUSE_IMAGE] {
        node.svc.remove_image(remove(image)).await.unwrap();
    }
    assert!(node.world.containerd.content().is_empty(), "{:?}", node.world.containerd.content());
    assert!(node.world.containerd.snapshots(SNAPSHOTTER).is_empty());
    assert!(nginx.layers.iter().all(|layer| !node.world.containerd.content().contains_key(&layer.digest)));
}

/// A pull the watchdog cancels is dropped mid-flight: its lease's delete is queued, and what it
/// fetched is collected once the queue ran (B23, B30).
#[madsim::test]
async fn a_cancelled_pull_leaves_no_lease() {
    cov_mark::check!(dropped_lease_queued_for_delete);
    let node =
        Node::start_with(crid::Config { image_pull_progress_timeout: Duration::from_secs(5), ..test_config() }).await;
    let nginx = registry_image(&node, NGINX_IMAGE).await;
    let stalled = nginx.layers.last().unwrap().digest.clone();
    node.world.containerd.set_fetch_plan(&stalled, Some(FetchPlan::StallAfter { bytes: 10 }));
    let result = node.svc.pull_image(PullImageRequest { image: Some(image_spec(NGINX_IMAGE)), ..Default::default() });
    assert_eq!(err_kind(result.await), ErrorKind::DeadlineExceeded);
    sleep(Duration::from_secs(5)).await;
    assert_quiescent(&node);
    assert_eq!(node.svc.snapshot().backoff_len, 0);
    assert!(node.world.containerd.content().is_empty(), "the cancelled pull's blobs are garbage");
    node.world.containerd.set_fetch_plan(&stalled, None);
    node.pull(NGINX_IMAGE).await;
    assert_disk_released(&node);
}

/// Leases crid made and no longer holds are swept at start-up (a crid that crashed mid-pull);
/// others' leases are left alone. A lease deleted behind crid's back fails only the pull that
/// held it (§5.4, B30).
#[madsim::test]
async fn leftover_and_vanished_leases() {
    cov_mark::check!(sweep_deleted_unheld_lease);
    let (world, faults) = world(7);
    let containerd = world.containerd.clone();
    let busybox = containerd.registry_image(BUSYBOX_IMAGE).unwrap();
    let crids: std::collections::BTreeMap<String, String> = [("io.crid.lease".into(), "pull".into())].into();
    let day = Duration::from_secs(24 * 3600);
    containerd.create_lease("crid-pull-crashed", &crids, day).await.unwrap();
    containerd.create_lease("someone-else", &Default::default(), day).await.unwrap();
    let anonymous = crid::ports::RegistryAuth::default();
    let registry: &dyn crid::ports::Registry = &*containerd;
    registry.fetch_blob(BUSYBOX_IMAGE, &busybox.layers[0], &anonymous, "crid-pull-crashed", &|_| {}).await.unwrap();
    let node = Node::start_on(world, faults, test_config()).await;
    assert_eq!(containerd.leases(), BTreeSet::from(["someone-else".to_string()]));
    assert!(containerd.content().is_empty(), "what the crashed pull fetched is collected");
    containerd.delete_lease("someone-else").await.unwrap();

    // The lease vanishes while a pull runs: that pull fails, the next one succeeds.
    containerd.set_fetch_latency(Duration::from_secs(2));
    let svc = node.svc.clone();
    let pull = tokio::spawn(async move {
        svc.pull_image(PullImageRequest { image: Some(image_spec(BUSYBOX_IMAGE)), ..Default::default() }).await
    });
    sleep(Duration::from_millis(500)).await;
    let leases = containerd.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    containerd.delete_lease(leases.iter().next().unwrap()).await.unwrap();
    assert_eq!(err_kind(pull.await.unwrap()), ErrorKind::NotFound);
    node.pull(BUSYBOX_IMAGE).await;
    assert_disk_released(&node);
}

/// Concurrent pulls of one private image with different credentials are not joined: a pull
/// with a wrong password fails (unauthorized) without failing one with the right password that
/// started meanwhile, and a pull without credentials does not succeed by joining one that has
/// them.
#[madsim::test]
async fn pulls_with_different_credentials_are_not_joined() {
    let node = Node::start().await;
    let containerd = node.world.containerd.clone();
    containerd.require_credentials(BUSYBOX_IMAGE, "alice", "right");
    containerd.set_fetch_latency(Duration::from_secs(2));
    let pull = |credentials: Option<(&str, &str)>| {
        let svc = node.svc.clone();
        let auth = credentials.map(|(username, password)| AuthConfig {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        });
        tokio::spawn(async move {
            svc.pull_image(PullImageRequest { image: Some(image_spec(BUSYBOX_IMAGE)), auth, ..Default::default() })
                .await
        })
    };

    // The right credentials first; the wrong ones and none while that pull runs.
    let right = pull(Some(("alice", "right")));
    sleep(Duration::from_millis(100)).await;
    let wrong = pull(Some(("alice", "wrong")));
    let anonymous = pull(None);
    assert_eq!(err_kind(wrong.await.unwrap()), ErrorKind::FailedPrecondition);
    assert_eq!(err_kind(anonymous.await.unwrap()), ErrorKind::FailedPrecondition, "no success by joining");
    let image_ref = right.await.unwrap().expect("the right credentials pull").image_ref;
    assert_eq!(image_ref, registry_image(&node, BUSYBOX_IMAGE).await.config.digest);

    // The wrong credentials first (slow to be refused); the right ones while that pull runs.
    node.svc
        .remove_image(RemoveImageRequest { image: Some(image_spec(BUSYBOX_IMAGE)) })
        .await
        .expect("remove the image");
    node.faults.push(FaultSite::RegistryResolve, None, FaultAction::Delay(Duration::from_secs(1)));
    let wrong = pull(Some(("alice", "wrong")));
    sleep(Duration::from_millis(100)).await;
    let right = pull(Some(("alice", "right")));
    assert_eq!(err_kind(wrong.await.unwrap()), ErrorKind::FailedPrecondition);
    assert_eq!(right.await.unwrap().expect("not failed by the wrong credentials").image_ref, image_ref);
    assert_disk_released(&node);
}
