//! A sweep split as a Kubernetes Indexed Job splits it (deploy/sim-job.yaml): each shard is a
//! separate crid-sim process that learns its shard from JOB_COMPLETION_INDEX and
//! JOB_COMPLETIONS and writes its summary; `crid-sim merge` combines the files into the
//! summary of the whole range, and refuses a set with a shard missing. Below that, the shard
//! arithmetic and the merge's refusals without processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output}; // determinism-ok: the test runs each shard as a process of its own.

use crid_sim::summary::{JOB_COUNT_VAR, Shard, Summary, merge_summaries};

const SCENARIO: &str = "names";
const SEEDS: &str = "0..12";
const SHARDS: u64 = 3;

#[expect(clippy::disallowed_methods, reason = "the test runs the command line as a Job's pod would")]
fn crid_sim(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crid-sim"));
    command.args(args).env_remove("JOB_COMPLETION_INDEX").env_remove("JOB_COMPLETIONS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run crid-sim")
}

#[expect(clippy::disallowed_methods, reason = "the summaries are files the shards wrote, read after they ended")]
fn read_summary(path: &Path) -> Summary {
    let text = std::fs::read_to_string(path).expect("summary written"); // determinism-ok: a finished shard's file.
    serde_json::from_str(&text).expect("summary parses")
}

#[test]
#[expect(clippy::disallowed_methods, reason = "the shards' summaries are real files in a temporary directory")]
fn indexed_job_shards_merge_into_the_whole_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for index in 0..SHARDS {
        let file = dir.path().join(format!("shard-{index}.json"));
        let path = file.to_str().unwrap();
        let env = [("JOB_COMPLETION_INDEX", index.to_string()), ("JOB_COMPLETIONS", SHARDS.to_string())];
        let output = crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS, "--jobs", "1", "--json", path], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "shard {index}: {}\n{stderr}", output.status);
        assert!(stderr.contains(&format!("shard {index}/{SHARDS} (from JOB_COMPLETION_INDEX")), "{stderr}");
        let summary = read_summary(&file);
        assert_eq!(summary.runs, 4, "shard {index} runs seeds {index}, {}, {}", index + 3, index + 6);
        assert_eq!(summary.range, Some((0, 12)));
        files.push(file);
    }

    let whole_file = dir.path().join("whole.json");
    let output =
        crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS, "--json", whole_file.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let whole = read_summary(&whole_file);
    assert_eq!((whole.runs, whole.shard), (12, None));

    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["merge"];
    args.extend(&paths);
    let merged = crid_sim(&args, &[]);
    let stdout = String::from_utf8_lossy(&merged.stdout);
    assert!(merged.status.success(), "merge: {}\n{}", merged.status, String::from_utf8_lossy(&merged.stderr));
    assert!(stdout.contains("runs                12"), "{stdout}");
    assert!(stdout.contains(&format!("failures            {}", whole.failed_seeds.len())), "{stdout}");

    // A Job's results volume: the directory's *.json files, the whole sweep's among them.
    std::fs::remove_file(&whole_file).unwrap(); // determinism-ok: test set-up between finished runs.
    let merged = crid_sim(&["merge", dir.path().to_str().unwrap()], &[]);
    assert!(merged.status.success(), "merge of the directory: {}", String::from_utf8_lossy(&merged.stderr));
    assert!(String::from_utf8_lossy(&merged.stdout).contains("runs                12"));

    let merged = crid_sim(&["merge", paths[0], paths[2]], &[]);
    let stderr = String::from_utf8_lossy(&merged.stderr);
    assert_eq!(merged.status.code(), Some(2), "a lost shard is refused: {stderr}");
    assert!(stderr.contains("1 of 3 shards missing: 1"), "{stderr}");
}

#[test]
fn half_an_indexed_jobs_environment_is_refused() {
    let output = crid_sim(&["run", "--scenario", SCENARIO, "--seeds", SEEDS], &[("JOB_COMPLETION_INDEX", "1".into())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("JOB_COMPLETIONS is not"), "{stderr}");
}

// The shard arithmetic and the merge, without processes.

fn shard_summary(index: u64, count: u64, failed: &[u64]) -> Summary {
    let shard = Shard::new(index, count).unwrap();
    Summary {
        scenario: "names".into(),
        runs: shard.seeds(0..10).len() as u64,
        failed_seeds: failed.to_vec(),
        failures_by_invariant: BTreeMap::from([("28 names".to_string(), failed.to_vec())]),
        range: Some((0, 10)),
        shard: Some(shard),
        ..Summary::default()
    }
}

#[test]
fn shards_are_disjoint_and_cover_the_range() {
    let count = 3;
    let mut all: Vec<u64> = (0..count).flat_map(|i| Shard::new(i, count).unwrap().seeds(5..17)).collect();
    all.sort_unstable();
    assert_eq!(all, (5..17).collect::<Vec<_>>());
    assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
    for bad in ["8/8", "1/0", "x/2", "3", ""] {
        assert!(Shard::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn an_indexed_jobs_environment_names_the_shard() {
    assert_eq!(Shard::from_job(None, None), Ok(None));
    assert_eq!(Shard::from_job(Some("4"), Some("16")), Ok(Some(Shard { index: 4, count: 16 })));
    let half = Shard::from_job(Some("4"), None).unwrap_err();
    assert!(half.contains(JOB_COUNT_VAR), "{half}");
    assert!(Shard::from_job(None, Some("16")).is_err());
    assert!(Shard::from_job(Some("16"), Some("16")).is_err(), "index out of range");
    assert!(Shard::from_job(Some("one"), Some("16")).is_err());
}

#[test]
fn merging_needs_every_shard_of_one_sweep_once() {
    let shards = [shard_summary(0, 3, &[]), shard_summary(1, 3, &[7]), shard_summary(2, 3, &[2])];
    let total = merge_summaries(&shards).unwrap();
    assert_eq!(total.runs, 10);
    assert_eq!(total.failed_seeds, vec![2, 7]);
    assert_eq!(total.failures_by_invariant["28 names"], vec![2, 7]);
    assert_eq!(total.range, Some((0, 10)));

    let missing = merge_summaries(&shards[..2]).unwrap_err();
    assert!(missing.contains("1 of 3 shards missing: 2"), "{missing}");
    let twice = merge_summaries(&[shards[0].clone(), shards[1].clone(), shards[1].clone()]).unwrap_err();
    assert!(twice.contains("shard 1/3 is there twice"), "{twice}");
    let mut other_range = shards[2].clone();
    other_range.range = Some((0, 20));
    assert!(merge_summaries(&[shards[0].clone(), shards[1].clone(), other_range]).is_err());
    let mut other_scenario = shards[2].clone();
    other_scenario.scenario = "exits".into();
    assert!(merge_summaries(&[shards[0].clone(), shards[1].clone(), other_scenario]).is_err());
    assert!(merge_summaries(&[]).is_err());
}

#[test]
fn summaries_without_shards_add_up_and_old_files_still_read() {
    let old = r#"{"scenario":"names","runs":4,"failed_seeds":[],"failures_by_invariant":{},"sim_ms":1,"wall_ms":1,"elapsed_ms":1}"#;
    let summary: Summary = serde_json::from_str(old).unwrap();
    assert_eq!((summary.range, summary.shard), (None, None));
    assert_eq!(merge_summaries(&[summary.clone(), summary]).unwrap().runs, 8);
}
