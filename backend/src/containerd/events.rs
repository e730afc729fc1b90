//! containerd event envelopes decoded by topic. The envelope's `Any.type_url` lacks the
//! `type.googleapis.com/` prefix, so a generic Any unpacker cannot be used; the topic names the
//! payload type unambiguously.

use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::{ImageCreate, ImageDelete, ImageUpdate};
use containerd_client::types::Envelope as ProtoEnvelope;
use crid::ports::{Envelope, Event};
use prost::Message;

use super::convert::timestamp_ns;

/// Filters for Subscribe: the topics the CRI acts on, in this namespace only. Not task exits:
/// the per-task Wait monitors record those, and each exit's event would only be sent, decoded
/// and dropped.
pub fn subscribe_filters(namespace: &str) -> Vec<String> {
    ["topic==\"/tasks/oom\"", "topic~=\"^/images/\""]
        .iter()
        .map(|topic| format!("namespace=={namespace},{topic}"))
        .collect()
}

pub fn decode(envelope: ProtoEnvelope) -> Envelope {
    let value = envelope.event.as_ref().map(|any| any.value.as_slice()).unwrap_or_default();
    let event =
        decode_payload(&envelope.topic, value).unwrap_or_else(|| Event::Other { topic: envelope.topic.clone() });
    Envelope {
        timestamp_ns: envelope.timestamp.as_ref().map(timestamp_ns).unwrap_or(0),
        namespace: envelope.namespace,
        topic: envelope.topic,
        event,
    }
}

/// None for topics the CRI ignores and for payloads that do not decode (logged).
fn decode_payload(topic: &str, value: &[u8]) -> Option<Event> {
    let decoded = match topic {
        "/tasks/oom" => TaskOom::decode(value).map(|e| Event::TaskOom { container_id: e.container_id }),
        "/tasks/exit" => match TaskExit::decode(value) {
            // An exec process's exit carries its exec id in `id`; only the init process (whose
            // id is the container id) ends the task, and `Event::TaskExit` means exactly that.
            Ok(e) if e.id != e.container_id && !e.id.is_empty() => return None,
            other => other.map(|e| Event::TaskExit {
                container_id: e.container_id,
                pid: e.pid,
                exit_code: e.exit_status,
                exited_at_ns: e.exited_at.as_ref().map(timestamp_ns).unwrap_or(0),
            }),
        },
        "/images/create" => ImageCreate::decode(value).map(|e| Event::ImageCreate { name: e.name }),
        "/images/update" => ImageUpdate::decode(value).map(|e| Event::ImageUpdate { name: e.name }),
        "/images/delete" => ImageDelete::decode(value).map(|e| Event::ImageDelete { name: e.name }),
        _ => return None,
    };
    decoded.map_err(|e| tracing::warn!(topic, error = %e, "undecodable containerd event")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_topic_not_type_url() {
        let payload = TaskExit { container_id: "c".into(), id: "c".into(), pid: 9, exit_status: 7, exited_at: None };
        let envelope = ProtoEnvelope {
            timestamp: None,
            namespace: "crid".into(),
            topic: "/tasks/exit".into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value: payload.encode_to_vec(),
            }),
        };
        assert_eq!(
            decode(envelope).event,
            Event::TaskExit { container_id: "c".into(), pid: 9, exit_code: 7, exited_at_ns: 0 }
        );
    }

    #[test]
    fn exec_exits_are_not_task_exits() {
        let payload =
            TaskExit { container_id: "c".into(), id: "exec-1".into(), pid: 9, exit_status: 3, exited_at: None };
        let envelope = ProtoEnvelope {
            timestamp: None,
            namespace: "crid".into(),
            topic: "/tasks/exit".into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value: payload.encode_to_vec(),
            }),
        };
        assert_eq!(decode(envelope).event, Event::Other { topic: "/tasks/exit".into() });
    }
}
