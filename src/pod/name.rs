//! The name grammar: pod names, environment variable names, image
//! references and host names.

use crate::error::{Error, Result};

use super::MAX_POD_NAME_LEN;

/// Refuse names that are not a plain directory name Docker accepts in a tag.
///
/// Nothing touches the file system. The rules are those of a Docker
/// repository path component (the default image tag is `cldpd-<name>`):
/// lowercase `[a-z0-9]` runs separated by a single `.`, one or two `_`, or
/// one or more `-`, starting and ending with a letter or digit, at most
/// [`MAX_POD_NAME_LEN`] characters. The error's `reason` says which rule
/// the name breaks.
///
/// ```
/// use cldpd::pod::validate_pod_name;
/// use cldpd::Error;
///
/// assert!(validate_pod_name("my-pod").is_ok());
/// assert!(validate_pod_name("api.v2").is_ok());
/// for bad in ["", "..", "../x", "/x", "a/b", "Web", "a..b", "-a"] {
///     assert!(matches!(validate_pod_name(bad), Err(Error::InvalidPodName { .. })), "{bad}");
/// }
/// let err = validate_pod_name("Web").unwrap_err();
/// assert!(err.to_string().contains("uppercase"));
/// ```
pub fn validate_pod_name(name: &str) -> Result<()> {
    match pod_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidPodName {
            name: name.to_string(),
            reason,
        }),
    }
}

pub(super) fn pod_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not pod names");
    }
    if name.starts_with(['/', '\\']) {
        return Some("an absolute path is not a pod name");
    }
    if name.contains(['/', '\\']) {
        if name.split(['/', '\\']).any(|c| c == "..") {
            return Some("a pod name cannot contain `..`: it would leave the pods directory");
        }
        return Some("a pod name cannot contain `/` or `\\`: it is one directory name, not a path");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    if name.chars().any(char::is_uppercase) {
        return Some("uppercase letters are not allowed: Docker image tags (`cldpd-<name>`) must be lowercase");
    }
    if let Some(reason) = path_component_problem(name) {
        return Some(reason);
    }
    if name.len() > MAX_POD_NAME_LEN {
        return Some(
            "longer than 122 characters: the image tag `cldpd-<name>` may have at most 128",
        );
    }
    None
}

/// Docker's grammar for one component of a repository path:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(super) fn path_component_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("is empty");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
    let bytes = s.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() {
        return Some("must start with a lowercase letter or digit");
    }
    if !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Some("must end with a lowercase letter or digit");
    }
    let bad_separator = s
        .split(|c: char| c.is_ascii_alphanumeric())
        .filter(|run| !run.is_empty())
        .any(|run| !(run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-')));
    if bad_separator {
        return Some("letters and digits may be separated only by one '.', one or two '_', or dashes (not `..`, `___` or a mix like `.-`)");
    }
    None
}

/// True when `name` is a valid environment variable name,
/// `[A-Za-z_][A-Za-z0-9_]*`.
///
/// ```
/// use cldpd::pod::is_valid_env_name;
/// assert!(is_valid_env_name("GH_TOKEN"));
/// assert!(!is_valid_env_name("1X") && !is_valid_env_name("A-B") && !is_valid_env_name(""));
/// ```
pub fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// [`is_valid_env_name`] as a `Result`: [`Error::InvalidEnvName`] naming
/// `origin` (where the name came from, e.g. `"/pods/web/pod.json env"` or
/// `"--env"`).
pub fn validate_env_name(name: &str, origin: &str) -> Result<()> {
    if is_valid_env_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidEnvName {
            name: name.to_string(),
            origin: origin.to_string(),
        })
    }
}

/// Check a Docker image reference usable as a build tag:
/// `[host[:port]/]path[:tag]`, no digest. Returns what is wrong.
pub(super) fn image_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("the image name is empty".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or control characters".into());
    }
    if image.contains('@') {
        return Some(
            "digests (`@sha256:...`) are not allowed: `image` is the tag cldpd builds".into(),
        );
    }
    let (name, tag) = match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    };
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Some(format!(
                "tag `{tag}` is invalid: a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ));
        }
    }
    if name.len() > 255 {
        return Some("the repository name is longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_registry(components[0]) {
        let host = components.remove(0);
        if let Some(problem) = host_problem(host) {
            return Some(format!("registry `{host}`: {problem}"));
        }
    }
    for c in components {
        if c.is_empty() {
            return Some(
                "it has an empty path component (`//`, or a leading or trailing `/`)".into(),
            );
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Some(format!(
                "`{c}` has uppercase letters: repository names must be lowercase"
            ));
        }
        if let Some(problem) = path_component_problem(c) {
            return Some(format!("path component `{c}`: {problem}"));
        }
    }
    None
}

/// Docker's rule: the first component is a registry when it has a `.` or a
/// `:`, is `localhost`, or has uppercase letters.
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// A host name with an optional port: labels of letters, digits and `-`
/// (not at either end) separated by `.`. Returns what is wrong.
pub(super) fn host_problem(host: &str) -> Option<&'static str> {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Some("the port must be a number from 0 to 65535");
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Some("not a host name (letters, digits and '-', separated by '.')");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::test_helpers::*;

    // ----- pod names ------------------------------------------------------

    #[test]
    fn pod_name_table() {
        let long_ok = "a".repeat(MAX_POD_NAME_LEN);
        let too_long = "a".repeat(MAX_POD_NAME_LEN + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", None),
            ("my-pod", None),
            ("a_b", None),
            ("a__b", None),
            ("a.b", None),
            ("a---b", None),
            ("x1", None),
            ("1", None),
            ("api.v2-beta_x", None),
            (&long_ok, None),
            ("", Some("empty")),
            (".", Some("`.` and `..`")),
            ("..", Some("`.` and `..`")),
            ("/x", Some("absolute")),
            ("\\x", Some("absolute")),
            ("../x", Some("leave the pods directory")),
            ("a/../b", Some("leave the pods directory")),
            ("a/b", Some("cannot contain `/`")),
            ("a\\b", Some("cannot contain `/`")),
            ("Web", Some("uppercase")),
            ("wEb", Some("uppercase")),
            ("a b", Some("whitespace")),
            ("a\tb", Some("whitespace")),
            ("a\u{7}b", Some("control")),
            ("a..b", Some("separated only by")),
            ("a___b", Some("separated only by")),
            ("a.-b", Some("separated only by")),
            ("a_-b", Some("separated only by")),
            ("-a", Some("must start")),
            (".hidden", Some("must start")),
            ("_a", Some("must start")),
            ("a-", Some("must end")),
            ("a.", Some("must end")),
            ("a:b", Some("only lowercase letters")),
            ("café", Some("only lowercase letters")),
            ("a@b", Some("only lowercase letters")),
            (&too_long, Some("longer than 122")),
        ];
        for (name, expected) in cases {
            match (validate_pod_name(name), expected) {
                (Ok(()), None) => {}
                (Err(Error::InvalidPodName { name: n, reason }), Some(want)) => {
                    assert_eq!(n, *name);
                    assert!(
                        reason.contains(want),
                        "{name:?}: reason {reason:?} lacks {want:?}"
                    );
                }
                (got, want) => panic!("{name:?}: got {got:?}, wanted refusal {want:?}"),
            }
        }
    }

    #[test]
    fn longest_name_makes_a_128_character_tag() {
        assert_eq!(MAX_POD_NAME_LEN, 122);
        let pod = pod_at(Path::new("/p"), PodConfig::default());
        let pod = Pod {
            name: "a".repeat(MAX_POD_NAME_LEN),
            ..pod
        };
        assert_eq!(pod.image().len(), 128);
        assert!(image_problem(&pod.image()).is_none());
    }

    #[test]
    fn bad_name_is_refused_before_touching_the_file_system() {
        let missing = Path::new("/nonexistent/cldpd/pods");
        for name in ["../x", "/etc", "", "Web"] {
            assert!(
                matches!(
                    Pod::discover(missing, name),
                    Err(Error::InvalidPodName { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "_a1", "GH_TOKEN", "a"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "a.b"] {
            assert!(!is_valid_env_name(bad), "{bad}");
            assert!(matches!(
                validate_env_name(bad, "--env"),
                Err(Error::InvalidEnvName { origin, .. }) if origin == "--env"
            ));
        }
    }

    #[test]
    fn image_table() {
        let valid = [
            "ubuntu",
            "ubuntu:22.04",
            "my/web",
            "my/web:v1.2-rc_3",
            "a.b/c",
            "registry.example.com/team/app:v1",
            "localhost/x",
            "localhost:5000/x:1",
            "my-registry:5000/a/b/c",
            "a__b/c---d",
            "x:_tag",
        ];
        for image in valid {
            assert!(
                image_problem(image).is_none(),
                "{image}: {:?}",
                image_problem(image)
            );
            let config = PodConfig {
                image: Some(image.into()),
                ..Default::default()
            };
            assert!(config.validate("web", Path::new("pod.json")).is_ok());
        }
        let long_tag = format!("x:{}", "t".repeat(129));
        let long_name = "a".repeat(256);
        let invalid = [
            ("", "empty"),
            ("Web", "uppercase"),
            ("my/Web", "uppercase"),
            ("a..b", "separated only by"),
            ("-a", "must start"),
            ("a/", "empty path component"),
            ("/a", "empty path component"),
            ("a//b", "empty path component"),
            ("foo:", "tag"),
            ("foo:-x", "tag"),
            ("foo:.x", "tag"),
            ("foo:a b", "whitespace"),
            ("foo:a/b", "port"),
            (&long_tag, "tag"),
            (&long_name, "255"),
            ("ubuntu@sha256:abcd", "digest"),
            ("example.com:99999/x", "port"),
            ("example.com:/x", "port"),
            ("-bad.com/x", "host name"),
            ("bad..com/x", "host name"),
            ("a$b", "only lowercase"),
        ];
        for (image, want) in invalid {
            let problem = image_problem(image).unwrap_or_else(|| panic!("{image:?} accepted"));
            assert!(
                problem.contains(want),
                "{image:?}: {problem:?} lacks {want:?}"
            );
        }
    }
}
