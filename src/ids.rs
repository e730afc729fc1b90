//! The ids of the objects crid owns, as types: a sandbox id where a container id is expected does
//! not compile. Both are containerd ids (the container's, and its task's), 64 hex digits when crid
//! made them; over the CRI and towards containerd they travel as strings, so the conversion happens
//! at the RPC handlers and at the calls into the ports. Serialised as the bare string, so metadata
//! persisted before the types existed reads back unchanged.
//!
//! ```compile_fail,E0308
//! fn remove(_container: &crid::ids::ContainerId) {}
//! remove(&crid::ids::SandboxId::from("5a4d"));
//! ```

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ports::Os;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh 64-hex-digit id drawn from the OS's randomness (seeded in the simulator).
            pub fn generate(os: &dyn Os) -> Self {
                $name(crate::naming::generate_id(os))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Lets a store keyed by ids answer a lookup by a string prefix (truncated ids).
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        /// As the bare string, so messages read as they did when ids were strings.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A pod sandbox's id; also the id of its pause container and task in containerd.
    SandboxId
);
id_type!(
    /// A container's id; also the id of its task in containerd.
    ContainerId
);

/// A task crid waits on: a sandbox's or a container's. The kind says which store its exit goes
/// to. Ordered by the id's text (then kind), so work keyed by task runs in id order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskId {
    Sandbox(SandboxId),
    Container(ContainerId),
}

impl TaskId {
    /// The task's id in containerd.
    pub fn as_str(&self) -> &str {
        match self {
            TaskId::Sandbox(id) => id.as_str(),
            TaskId::Container(id) => id.as_str(),
        }
    }

    /// "Sandbox" or "Container", for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            TaskId::Sandbox(_) => "Sandbox",
            TaskId::Container(_) => "Container",
        }
    }
}

impl Ord for TaskId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str()).then(self.kind_name().cmp(other.kind_name()))
    }
}

impl PartialOrd for TaskId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialise_as_bare_strings() {
        let id = ContainerId::from("abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert_eq!(serde_json::from_str::<SandboxId>("\"def\"").unwrap(), SandboxId::from("def"));
    }

    #[test]
    fn tasks_order_by_id_text_whatever_their_kind() {
        let mut tasks = [TaskId::Container("b".into()), TaskId::Sandbox("c".into()), TaskId::Sandbox("a".into())];
        tasks.sort();
        assert_eq!(tasks.iter().map(TaskId::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
