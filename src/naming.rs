//! Ids, CRI object names, image reference normalisation and request-map conversion.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result, quoted};
use crate::ports::Os;

/// A fresh 64-hex-digit id drawn from the OS's randomness (seeded in the simulator).
pub fn generate_id(os: &dyn Os) -> String {
    let mut bytes = [0u8; 32];
    os.random_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Converts a request's map so that iteration order never depends on hashing.
#[expect(clippy::disallowed_methods, reason = "the BTreeMap orders what the hash order would not")]
pub fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `name_namespace_uid_attempt`.
pub fn sandbox_name(metadata: &k8s_cri::v1::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", metadata.name, metadata.namespace, metadata.uid, metadata.attempt)
}

/// `container_pod_namespace_uid_attempt`.
pub fn container_name(container: &k8s_cri::v1::ContainerMetadata, sandbox: &k8s_cri::v1::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}_{}", container.name, sandbox.name, sandbox.namespace, sandbox.uid, container.attempt)
}

pub fn validate_sandbox_metadata(
    metadata: Option<&k8s_cri::v1::PodSandboxMetadata>,
) -> Result<&k8s_cri::v1::PodSandboxMetadata> {
    let metadata = metadata.ok_or_else(|| Error::invalid("sandbox config must include metadata"))?;
    for (field, value) in [("name", &metadata.name), ("namespace", &metadata.namespace), ("uid", &metadata.uid)] {
        check_name_part(&format!("sandbox config metadata.{field}"), value)?;
    }
    Ok(metadata)
}

/// The characters a CRI name part (a pod's name, namespace or uid, a container's name) must not
/// hold. `/` would make it several path components wherever it names a directory or a file (as
/// kubelet's pod log directories do); `;` and `=` are the separators of the CNI_ARGS the pod's
/// name, namespace and uid are passed to plugins in, so a name holding them could set other
/// arguments (a static `IP=`); NUL and other control characters cut or garble C strings, logs
/// and labels. Kubernetes names (DNS labels, UUIDs) never hold any of these; containerd does
/// not check, and lets such a name through to the CNI plugins and the runtime.
fn forbidden_in_name(c: char) -> bool {
    matches!(c, '/' | ';' | '=') || c.is_control()
}

/// A part of a CRI object's name: not empty, and none of [`forbidden_in_name`]'s characters.
pub fn check_name_part(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} must not be empty")));
    }
    if let Some(c) = value.chars().find(|&c| forbidden_in_name(c)) {
        return Err(Error::invalid(format!("{field} {} must not contain {c:?}", quoted(value))));
    }
    Ok(())
}

/// The most bytes a label's key and value may have together in containerd's metadata store.
pub const LABEL_SIZE_MAX_BYTES: usize = 4096;

/// Refuses labels containerd cannot store, before anything is created: a pod's or a container's
/// labels become its containerd record's, whose store refuses an empty key (an error without a
/// code, which reached the client as Unknown once the pod's first steps had been taken and
/// undone) and a key and value longer than [`LABEL_SIZE_MAX_BYTES`] together. Kubernetes never
/// sends either. Among several bad labels the first in key order is named, whatever the map's
/// order; the labels are not copied to find it.
pub fn check_labels(field: &str, labels: &HashMap<String, String>) -> Result<()> {
    let bad = |(key, value): &(&String, &String)| key.is_empty() || key.len() + value.len() > LABEL_SIZE_MAX_BYTES;
    #[expect(clippy::disallowed_methods, reason = "the smallest bad key is the same in any order")]
    let first_bad = labels.iter().filter(bad).min_by(|a, b| a.0.cmp(b.0));
    match first_bad {
        None => Ok(()),
        Some((key, _)) if key.is_empty() => Err(Error::invalid(format!("{field}: a label key must not be empty"))),
        Some((key, value)) => Err(Error::invalid(format!(
            "{field}: label {} has {} bytes of key and value, more than the {LABEL_SIZE_MAX_BYTES} containerd stores",
            quoted(key),
            key.len() + value.len()
        ))),
    }
}

/// True when `labels` contain every pair of `selector`.
#[expect(clippy::disallowed_methods, reason = "`all` gives the same answer in any order")]
pub fn labels_match(selector: &HashMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The most characters the name (`domain/repository`) of a reference may have, as in docker's
/// reference grammar. containerd 1.7 counts the domain and the `library/` it adds, so `"a" × 237`
/// is the longest bare name accepted and `"a" × 5000` is refused, not normalised.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// The name docker.io once went by, still accepted for it.
const DOCKER_HUB_LEGACY_DOMAIN: &str = "index.docker.io";

/// docker's reference grammar (distribution's `reference` package), assembled from its
/// productions. oci-spec's matcher, which this replaces, writes the tag's characters as `\w`,
/// which the regex crate takes as every Unicode word character: compiling its automaton took
/// about 35 ms and 5 MB (150 ms where the memory was fresh huge pages, first thing in every
/// simulator fork server), in every process, on its first reference, and each match ran over
/// it. The grammar is ASCII (Go's `\w` is), and so is this one, compiled in well under a
/// millisecond. Captures: 1 the name, 2 the tag, 3 the digest.
fn reference_grammar() -> &'static regex::Regex {
    static GRAMMAR: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let alphanumeric = "[a-z0-9]+";
        let separator = "(?:[._]|__|-+)";
        let path_component = format!("{alphanumeric}(?:{separator}{alphanumeric})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"{domain_component}(?:\.{domain_component})*(?::[0-9]+)?");
        let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let algorithm = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*";
        let digest = format!("{algorithm}:[0-9A-Fa-f]{{32,}}");
        regex::Regex::new(&format!("^({name})(?::({tag}))?(?:@({digest}))?$")).expect("the grammar compiles")
    })
}

/// A reference split by the grammar.
struct ParsedReference<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// The reference's parts, or why the grammar refuses it, in docker's words.
fn parse_reference(reference: &str) -> std::result::Result<ParsedReference<'_>, &'static str> {
    if reference.is_empty() {
        return Err("repository name must have at least one component");
    }
    let captures = reference_grammar().captures(reference).ok_or("invalid reference format")?;
    let part = |index: usize| captures.get(index).map(|m| m.as_str());
    Ok(ParsedReference { name: part(1).expect("the name is not optional"), tag: part(2), digest: part(3) })
}

/// docker's rule for a name's domain: the first component when it has a `.` or a `:` or is
/// `localhost`, else `docker.io`, where a one-component repository is an official image under
/// `library/` (and `index.docker.io` is the old name of `docker.io`).
fn docker_split(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB_DOMAIN, name),
    };
    let domain = if domain == DOCKER_HUB_LEGACY_DOMAIN { DOCKER_HUB_DOMAIN } else { domain };
    if domain == DOCKER_HUB_DOMAIN && !remainder.contains('/') {
        (domain, format!("library/{remainder}"))
    } else {
        (domain, remainder.to_string())
    }
}

/// A digest's hex part has its algorithm's length (the grammar takes any algorithm and 32 or
/// more hex digits).
fn check_digest_length(digest: &str) -> std::result::Result<(), &'static str> {
    let (algorithm, hex_part) = digest.split_once(':').expect("the grammar puts a colon in a digest");
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex_part.len() == length { Ok(()) } else { Err("invalid checksum digest length") }
}

/// An image reference normalised by docker's rules, as containerd 1.7's CRI normalises every
/// reference it is given (`ParseDockerRef`):
/// - no domain means `docker.io`, and a one-component repository there gets `library/`
///   (`busybox` → `docker.io/library/busybox:latest`; `index.docker.io` is `docker.io`);
/// - the first component is a domain when it has a `.` or a `:`, is `localhost`, or has an
///   uppercase letter (`127.0.0.1:5000/x`, `localhost/a/b`, `Foo/bar`);
/// - no tag and no digest means `:latest`; with both, the digest wins and the tag is dropped;
/// - a 64-hex-digit string is an image id, not a reference, and is refused.
///
/// The grammar is docker's distribution reference ([`reference_grammar`]). Two deliberate
/// differences from containerd: a digest must be `sha256` (containerd also parses
/// `sha384`/`sha512`, which nothing here can verify), and a bracketed IPv6 registry host is not
/// accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef(oci_spec::distribution::Reference);

impl ImageRef {
    /// Parses and normalises `reference`; a bad one is InvalidArgument.
    pub fn parse(reference: &str) -> Result<ImageRef> {
        let invalid = |why: &dyn std::fmt::Display| {
            Error::invalid(format!("invalid image reference {}: {why}", quoted(reference)))
        };
        // The grammar is ASCII: anything else is refused in its words before it looks.
        if !reference.is_ascii() {
            return Err(invalid(&"invalid reference format"));
        }
        if reference.len() == 64 && reference.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(&"a 64-hex-digit string is an image id, not a repository name"));
        }
        let parsed = parse_reference(reference).map_err(|why| invalid(&why))?;
        let (domain, repository) = docker_split(parsed.name);
        if repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(&format_args!(
                "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }
        if let Some(digest) = parsed.digest {
            check_digest_length(digest).map_err(|why| invalid(&why))?;
        }
        // docker files an uppercase first component under docker.io; containerd makes it the
        // domain (the path grammar is lowercase, so an uppercase letter can only be there).
        let (domain, repository) = match repository.split_once('/') {
            Some((first, rest)) if domain == DOCKER_HUB_DOMAIN && first.bytes().any(|b| b.is_ascii_uppercase()) => {
                (first.to_string(), rest.to_string())
            }
            _ => (domain.to_string(), repository),
        };
        if domain.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(&format_args!(
                "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }
        let normalized = match parsed.digest {
            Some(digest) => {
                let hex_part =
                    digest.strip_prefix("sha256:").ok_or_else(|| invalid(&"unsupported digest algorithm"))?;
                if !hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(invalid(&"invalid digest format"));
                }
                oci_spec::distribution::Reference::with_digest(domain, repository, digest.to_string())
            }
            None => {
                let tag = parsed.tag.unwrap_or("latest").to_string();
                oci_spec::distribution::Reference::with_tag(domain, repository, tag)
            }
        };
        Ok(ImageRef(normalized))
    }

    /// The registry host, with its port if it has one: `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        self.0.registry()
    }

    /// The repository path within the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    /// The tag; None when the reference is pinned by digest.
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    /// The `sha256:…` digest the reference is pinned to, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// `domain/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain(), self.repository())
    }

    /// What a registry's manifests endpoint is asked for: the digest when pinned, else the tag.
    pub fn object(&self) -> &str {
        self.digest().or(self.tag()).unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;

    fn from_str(reference: &str) -> Result<ImageRef> {
        ImageRef::parse(reference)
    }
}

/// The normalised text of a reference (see [`ImageRef`]).
pub fn normalize_image_ref(reference: &str) -> Result<String> {
    ImageRef::parse(reference).map(|r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Known answers of containerd 1.7's `ParseDockerRef` for each reference.
    #[test]
    fn references_normalise_like_containerd() {
        let long_ok = "a".repeat(NAME_TOTAL_LENGTH_MAX - "docker.io/library/".len());
        let cases: Vec<(String, String)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest".into()),
            ("busybox:1.36".into(), "docker.io/library/busybox:1.36".into()),
            ("user/app:v1".into(), "docker.io/user/app:v1".into()),
            ("docker.io/busybox".into(), "docker.io/library/busybox:latest".into()),
            ("index.docker.io/library/busybox".into(), "docker.io/library/busybox:latest".into()),
            ("library/foo/bar".into(), "docker.io/library/foo/bar:latest".into()),
            ("localhost/a/b:1".into(), "localhost/a/b:1".into()),
            ("localhost:5000/x".into(), "localhost:5000/x:latest".into()),
            ("127.0.0.1:5000/x:tag".into(), "127.0.0.1:5000/x:tag".into()),
            ("127.0.0.1:5000/a/b:2".into(), "127.0.0.1:5000/a/b:2".into()),
            ("test_com/foo".into(), "docker.io/test_com/foo:latest".into()),
            ("Foo/bar".into(), "Foo/bar:latest".into()),
            ("busybox:Tag_1.x-y".into(), "docker.io/library/busybox:Tag_1.x-y".into()),
            (format!("busybox@{DIGEST}"), format!("docker.io/library/busybox@{DIGEST}")),
            (format!("busybox:1.36@{DIGEST}"), format!("docker.io/library/busybox@{DIGEST}")),
            (format!("sha256:{}", &DIGEST[7..]), format!("docker.io/library/sha256:{}", &DIGEST[7..])),
            (long_ok.clone(), format!("docker.io/library/{long_ok}:latest")),
        ];
        for (input, expected) in cases {
            assert_eq!(ImageRef::parse(&input).map(|r| r.to_string()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn labels_containerd_cannot_store_are_refused_in_key_order() {
        let labels = |pairs: &[(&str, String)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        assert!(check_labels("labels", &labels(&[("app", "x".into()), ("k", "v".repeat(4095))])).is_ok());
        assert!(check_labels("labels", &labels(&[("app", String::new())])).is_ok(), "an empty value is fine");
        let empty_key = check_labels("labels", &labels(&[("", "v".into())])).unwrap_err();
        assert_eq!(empty_key.kind, crate::error::ErrorKind::InvalidArgument);
        assert!(empty_key.message.contains("must not be empty"), "{}", empty_key.message);
        let too_big = check_labels("labels", &labels(&[("k", "v".repeat(4096))])).unwrap_err();
        assert!(too_big.message.contains("4097 bytes"), "{}", too_big.message);
        // Two bad labels: the first key in order is named, whatever order the map iterates in.
        let two = labels(&[("b", "v".repeat(5000)), ("a", "v".repeat(5000))]);
        assert!(check_labels("labels", &two).unwrap_err().message.contains("\"a\""));
    }

    #[test]
    fn invalid_references_are_invalid_argument() {
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "at least one component"),
            ("UPPER".into(), "invalid reference format"),
            ("docker/Docker".into(), "invalid reference format"),
            ("a:b:c".into(), "invalid reference format"),
            ("busybox:bad tag".into(), "invalid reference format"),
            ("busybox:-tag".into(), "invalid reference format"),
            ("busybox:tägé".into(), "invalid reference format"),
            ("docker///docker".into(), "invalid reference format"),
            ("-docker".into(), "invalid reference format"),
            ("https://github.com/docker/docker".into(), "invalid reference format"),
            (format!("busybox:{}", "t".repeat(129)), "invalid reference format"),
            ("busybox@sha256:abc".into(), "invalid reference format"),
            (format!("busybox@sha256:{}", "a".repeat(63)), "digest length"),
            (format!("busybox@sha512:{}", "a".repeat(128)), "unsupported digest algorithm"),
            (format!("busybox@sha256:{}", "A".repeat(64)), "invalid digest format"),
            (DIGEST[7..].to_string(), "image id"),
            ("a".repeat(NAME_TOTAL_LENGTH_MAX - "docker.io/library/".len() + 1), "255 characters"),
        ];
        for (input, why) in cases {
            let error = ImageRef::parse(&input).unwrap_err();
            assert_eq!(error.kind, crate::error::ErrorKind::InvalidArgument, "{input}");
            assert!(error.to_string().contains(why), "{input}: {error}");
        }
    }

    /// The normalisation crid had when oci-spec's own parser matched the grammar (its `\w`
    /// taking any Unicode letter, hence the ASCII check first): the oracle the grammar written
    /// out here must agree with, on the normalised reference or on the words of the refusal.
    fn parse_with_oci_spec(reference: &str) -> std::result::Result<String, String> {
        if !reference.is_ascii() {
            return Err("invalid reference format".into());
        }
        if reference.len() == 64 && reference.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("image id".into());
        }
        let parsed = oci_spec::distribution::Reference::try_from(reference).map_err(|e| e.to_string())?;
        let (domain, repository) = match parsed.repository().split_once('/') {
            Some((first, rest))
                if parsed.registry() == "docker.io" && first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (parsed.registry().to_string(), parsed.repository().to_string()),
        };
        if domain.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(format!("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"));
        }
        match parsed.digest() {
            Some(digest) => {
                let hex_part = digest.strip_prefix("sha256:").ok_or("unsupported digest algorithm")?;
                if !hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err("invalid digest format".into());
                }
                Ok(format!("{domain}/{repository}@{digest}"))
            }
            None => Ok(format!("{domain}/{repository}:{}", parsed.tag().unwrap_or("latest"))),
        }
    }

    fn agrees_with_oci_spec(reference: &str) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
        let ours = ImageRef::parse(reference).map(|r| r.to_string());
        match (ours, parse_with_oci_spec(reference)) {
            (Ok(ours), Ok(theirs)) => proptest::prop_assert_eq!(ours, theirs, "{:?}", reference),
            (Err(ours), Err(theirs)) => {
                proptest::prop_assert!(ours.to_string().contains(&theirs), "{:?}: {} / {}", reference, ours, theirs)
            }
            (ours, theirs) => proptest::prop_assert!(false, "{:?}: {:?} / {:?}", reference, ours, theirs),
        }
        Ok(())
    }

    /// References made of the grammar's own pieces (domains with ports, path components with
    /// each separator, tags up to and past 128 characters, digests of each algorithm and
    /// length), and strings of the characters that matter to it, parse as oci-spec parsed them.
    #[test]
    fn the_grammar_agrees_with_oci_spec() {
        use proptest::prelude::*;
        let domain = proptest::option::of(prop_oneof![
            Just("localhost".to_string()),
            Just("index.docker.io".to_string()),
            Just("docker.io".to_string()),
            "[a-zA-Z0-9][a-zA-Z0-9-]{0,3}(\\.[a-z0-9-]{1,4}){0,2}(:[0-9]{1,5})?",
            "[A-Z][a-z]{0,3}",
        ]);
        let component = "[a-z0-9]{1,3}(([._]|__|-{1,2})[a-z0-9]{1,3}){0,2}|[a-zA-Z0-9._-]{1,4}";
        let path = proptest::collection::vec(component, 1..4).prop_map(|parts| parts.join("/"));
        let tag = proptest::option::of(prop_oneof!["[a-zA-Z0-9_.-]{1,6}", "[a-z]{127,129}"]);
        let digest = proptest::option::of((
            prop_oneof![Just("sha256"), Just("sha384"), Just("sha512"), Just("md5"), Just("sha256+b64")],
            prop_oneof![Just(32usize), Just(63), Just(64), Just(96), Just(128)],
            prop_oneof![Just('a'), Just('F'), Just('0')],
        ));
        let made = (domain, path, tag, digest).prop_map(|(domain, path, tag, digest)| {
            let mut reference = domain.map(|d| format!("{d}/")).unwrap_or_default() + &path;
            if let Some(tag) = tag {
                reference += &format!(":{tag}");
            }
            if let Some((algorithm, length, digit)) = digest {
                reference += &format!("@{algorithm}:{}", digit.to_string().repeat(length));
            }
            reference
        });
        let runner_config = ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() };
        proptest::proptest!(runner_config, |(reference in made)| agrees_with_oci_spec(&reference)?);
        let scattered = "[a-zA-Z0-9._:/@+ä -]{0,24}";
        proptest::proptest!(runner_config, |(reference in scattered)| agrees_with_oci_spec(&reference)?);
        for long in [236, 237, 238, 250, 255, 256, 300] {
            for reference in [
                "a".repeat(long),
                format!("example.com/{}", "b".repeat(long)),
                format!("Foo/{}", "c".repeat(long)),
                format!("{}@sha256:{}", "a".repeat(long), "0".repeat(63)),
            ] {
                agrees_with_oci_spec(&reference).unwrap();
            }
        }
    }

    #[test]
    fn an_error_quotes_a_bounded_prefix_of_the_input() {
        use crate::error::QUOTED_INPUT_MAX_CHARS;
        let huge = "a".repeat(5000);
        let message = ImageRef::parse(&huge).unwrap_err().to_string();
        assert!(message.contains(&format!("\"{}\"… (5000 bytes)", "a".repeat(QUOTED_INPUT_MAX_CHARS))), "{message}");
        assert!(message.len() < QUOTED_INPUT_MAX_CHARS + 200, "{} bytes", message.len());
    }

    #[test]
    fn name_parts_with_separators_or_control_characters_are_refused() {
        for good in ["web-0", "kube-system", "0b5a7c1e-3f7e-4e8e-9a8a-1c2d3e4f5a6b", "Upper.dots_under"] {
            check_name_part("name", good).unwrap();
        }
        for bad in ["", "../x", "a/b", "/", "x;IP=10.0.0.9", "a=b", "nul\0", "line\nbreak", "tab\t"] {
            let error = check_name_part("name", bad).unwrap_err();
            assert_eq!(error.kind, crate::error::ErrorKind::InvalidArgument, "{bad:?}");
        }
        let metadata = |name: &str| k8s_cri::v1::PodSandboxMetadata {
            name: name.into(),
            namespace: "ns".into(),
            uid: "u".into(),
            attempt: 0,
        };
        assert!(validate_sandbox_metadata(Some(&metadata("web"))).is_ok());
        let error = validate_sandbox_metadata(Some(&metadata("../../etc"))).unwrap_err();
        assert!(error.message.contains("metadata.name \"../../etc\" must not contain '/'"), "{error}");
        let long = format!("{}/", "a".repeat(5000));
        let message = validate_sandbox_metadata(Some(&metadata(&long))).unwrap_err().message;
        assert!(message.len() < 400, "{} bytes", message.len());
    }

    #[test]
    fn parts_and_object() {
        let tagged = ImageRef::parse("127.0.0.1:5000/a/b:2").unwrap();
        assert_eq!(
            (tagged.domain(), tagged.repository(), tagged.tag(), tagged.digest()),
            ("127.0.0.1:5000", "a/b", Some("2"), None)
        );
        assert_eq!((tagged.name(), tagged.object()), ("127.0.0.1:5000/a/b".to_string(), "2"));
        let pinned = ImageRef::parse(&format!("busybox:1@{DIGEST}")).unwrap();
        assert_eq!((pinned.tag(), pinned.digest(), pinned.object()), (None, Some(DIGEST), DIGEST));
        assert_eq!(pinned.name(), "docker.io/library/busybox");
        // Normalising is idempotent: the backend re-parses what the core normalised.
        for reference in ["busybox", "Foo/bar:1", "localhost/a/b:1"] {
            let once = ImageRef::parse(reference).unwrap();
            assert_eq!(ImageRef::parse(&once.to_string()).unwrap(), once);
        }
    }
}
