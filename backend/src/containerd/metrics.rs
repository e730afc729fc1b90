//! Task metrics: containerd returns cgroup statistics as an `Any`; on cgroup v1 hosts it holds
//! `io.containerd.cgroups.v1.Metrics`, whose proto is not part of containerd's API crate. The
//! subset below keeps the field numbers of containerd/cgroups' stats/v1/metrics.proto.

use crid::error::{Error, Result};
use crid::ports::TaskMetrics;
use prost::Message;

pub const CGROUPS_V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const CGROUPS_V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Clone, PartialEq, Message)]
pub struct V1Metrics {
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<V1CpuStat>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<V1MemoryStat>,
    #[prost(message, optional, tag = "9")]
    pub memory_oom_control: Option<V1MemoryOomControl>,
}

/// `memory.oom_control`: `oom_kill` counts the processes the OOM killer took in this cgroup.
#[derive(Clone, PartialEq, Message)]
pub struct V1MemoryOomControl {
    #[prost(uint64, tag = "3")]
    pub oom_kill: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct V1CpuStat {
    #[prost(message, optional, tag = "1")]
    pub usage: Option<V1CpuUsage>,
}

#[derive(Clone, PartialEq, Message)]
pub struct V1CpuUsage {
    /// Nanoseconds of CPU time, all cores.
    #[prost(uint64, tag = "1")]
    pub total: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct V1MemoryStat {
    #[prost(uint64, tag = "2")]
    pub rss: u64,
    #[prost(uint64, tag = "9")]
    pub pg_fault: u64,
    #[prost(uint64, tag = "10")]
    pub pg_maj_fault: u64,
    #[prost(uint64, tag = "19")]
    pub total_rss: u64,
    #[prost(uint64, tag = "26")]
    pub total_pg_fault: u64,
    #[prost(uint64, tag = "27")]
    pub total_pg_maj_fault: u64,
    #[prost(uint64, tag = "30")]
    pub total_inactive_file: u64,
    #[prost(message, optional, tag = "33")]
    pub usage: Option<V1MemoryEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct V1MemoryEntry {
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    #[prost(uint64, tag = "2")]
    pub usage: u64,
}

/// cgroup v2 subset (containerd/cgroups stats/v2/metrics.proto), for hosts on the unified tree.
#[derive(Clone, PartialEq, Message)]
pub struct V2Metrics {
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<V2CpuStat>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<V2MemoryStat>,
    #[prost(message, optional, tag = "8")]
    pub memory_events: Option<V2MemoryEvents>,
}

/// `memory.events`: `oom_kill` counts the processes the OOM killer took in this cgroup.
#[derive(Clone, PartialEq, Message)]
pub struct V2MemoryEvents {
    #[prost(uint64, tag = "5")]
    pub oom_kill: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct V2CpuStat {
    #[prost(uint64, tag = "1")]
    pub usage_usec: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct V2MemoryStat {
    #[prost(uint64, tag = "1")]
    pub anon: u64,
    #[prost(uint64, tag = "13")]
    pub inactive_file: u64,
    #[prost(uint64, tag = "22")]
    pub pgfault: u64,
    #[prost(uint64, tag = "23")]
    pub pgmajfault: u64,
    #[prost(uint64, tag = "33")]
    pub usage: u64,
}

/// Decodes by the Any's type name; the prefix (if any) before the last '/' is ignored.
pub fn decode(type_url: &str, value: &[u8], timestamp_ns: i64) -> Result<TaskMetrics> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let bad = |e: prost::DecodeError| Error::internal(format!("decode {name}: {e}"));
    match name {
        CGROUPS_V1_TYPE => {
            let m = V1Metrics::decode(value).map_err(bad)?;
            let memory = m.memory.unwrap_or_default();
            let usage = memory.usage.as_ref().map(|u| u.usage).unwrap_or(0);
            Ok(TaskMetrics {
                timestamp_ns,
                cpu_usage_core_ns: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
                // As kubelet/cadvisor define it: usage minus the inactive page cache.
                memory_working_set_bytes: usage.saturating_sub(memory.total_inactive_file),
                memory_usage_bytes: usage,
                memory_rss_bytes: memory.total_rss,
                memory_page_faults: memory.total_pg_fault,
                memory_major_page_faults: memory.total_pg_maj_fault,
                oom_kills: m.memory_oom_control.map_or(0, |control| control.oom_kill),
            })
        }
        CGROUPS_V2_TYPE => {
            let m = V2Metrics::decode(value).map_err(bad)?;
            let memory = m.memory.unwrap_or_default();
            Ok(TaskMetrics {
                timestamp_ns,
                cpu_usage_core_ns: m.cpu.map(|c| c.usage_usec * 1000).unwrap_or(0),
                memory_working_set_bytes: memory.usage.saturating_sub(memory.inactive_file),
                memory_usage_bytes: memory.usage,
                memory_rss_bytes: memory.anon,
                memory_page_faults: memory.pgfault,
                memory_major_page_faults: memory.pgmajfault,
                oom_kills: m.memory_events.map_or(0, |events| events.oom_kill),
            })
        }
        other => Err(Error::unimplemented(format!("unknown metrics type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_working_set_excludes_inactive_file() {
        let m = V1Metrics {
            cpu: Some(V1CpuStat { usage: Some(V1CpuUsage { total: 7 }) }),
            memory: Some(V1MemoryStat {
                total_inactive_file: 100,
                total_rss: 50,
                usage: Some(V1MemoryEntry { limit: 0, usage: 400 }),
                ..Default::default()
            }),
            memory_oom_control: None,
        };
        let decoded = decode(CGROUPS_V1_TYPE, &m.encode_to_vec(), 1).unwrap();
        assert_eq!(
            (decoded.cpu_usage_core_ns, decoded.memory_working_set_bytes, decoded.memory_rss_bytes),
            (7, 300, 50)
        );
    }

    #[test]
    fn oom_kills_come_from_memory_events_or_oom_control() {
        let v2 = V2Metrics { memory_events: Some(V2MemoryEvents { oom_kill: 2 }), ..Default::default() };
        assert_eq!(decode(CGROUPS_V2_TYPE, &v2.encode_to_vec(), 1).unwrap().oom_kills, 2);
        let v1 = V1Metrics { memory_oom_control: Some(V1MemoryOomControl { oom_kill: 1 }), ..Default::default() };
        assert_eq!(decode(&format!("types/{CGROUPS_V1_TYPE}"), &v1.encode_to_vec(), 1).unwrap().oom_kills, 1);
        assert_eq!(decode(CGROUPS_V2_TYPE, &V2Metrics::default().encode_to_vec(), 1).unwrap().oom_kills, 0);
        assert!(decode("io.example.Other", &[], 1).is_err());
    }
}
