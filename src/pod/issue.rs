//! Issue URLs: `http(s)://<host>/<owner>/<repo>/issues/<number>`.

use crate::error::{Error, Result};

use super::name::host_problem;

/// Validate an issue URL: `http(s)://<host>/<owner>/<repo>/issues/<number>`.
///
/// Any host is accepted (github.com, www.github.com, GitHub Enterprise); a
/// trailing `/`, a `?query` and a `#fragment` are tolerated. `owner` and
/// `repo` are `[A-Za-z0-9_.-]+`. The error's `reason` says what is wrong.
///
/// ```
/// use cldpd::pod::validate_issue_url;
/// assert!(validate_issue_url("https://github.com/owner/repo/issues/42").is_ok());
/// assert!(validate_issue_url("https://ghe.example.com/team/app/issues/7/").is_ok());
/// let err = validate_issue_url("https://github.com/owner/repo/pull/42").unwrap_err();
/// assert!(err.to_string().contains("pull request"));
/// ```
pub fn validate_issue_url(url: &str) -> Result<()> {
    match issue_url_problem(url) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidIssueUrl {
            url: url.to_string(),
            reason,
        }),
    }
}

/// An issue as a user may write it, as its full URL:
///
/// - a URL stays as it is (checked by [`validate_issue_url`]);
/// - `owner/repo#42` (gh's shorthand) is `https://github.com/owner/repo/issues/42`;
/// - `#42` is issue 42 of `repository` (`pod.json`'s `repository`:
///   `owner/repo`, or a repository URL for GitHub Enterprise); without
///   one it is an error that says to add it.
///
/// ```
/// use cldpd::pod::expand_issue;
/// assert_eq!(expand_issue("#42", Some("acme/web")).unwrap(), "https://github.com/acme/web/issues/42");
/// assert_eq!(
///     expand_issue("#7", Some("https://ghe.example.com/team/app/")).unwrap(),
///     "https://ghe.example.com/team/app/issues/7"
/// );
/// assert_eq!(expand_issue("acme/web#1", None).unwrap(), "https://github.com/acme/web/issues/1");
/// assert!(expand_issue("#42", None).unwrap_err().to_string().contains("repository"));
/// ```
pub fn expand_issue(issue: &str, repository: Option<&str>) -> Result<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(number) = issue.strip_prefix('#').filter(|n| digits(n)) {
        let Some(repo) = repository else {
            return Err(Error::InvalidIssueUrl {
                url: issue.to_string(),
                reason: "`#N` needs the pod's repository: add \"repository\": \"owner/repo\" to its pod.json, or write owner/repo#N",
            });
        };
        let base = repository_url(repo).map_err(|reason| Error::InvalidIssueUrl {
            url: issue.to_string(),
            reason,
        })?;
        return Ok(format!("{base}/issues/{number}"));
    }
    if let Some((repo, number)) = issue.split_once('#') {
        if digits(number) && !repo.contains("://") {
            if let Some((owner, name)) = repo.split_once('/') {
                if name_ok(owner) && name_ok(name) {
                    return Ok(format!("https://github.com/{owner}/{name}/issues/{number}"));
                }
            }
        }
    }
    Ok(issue.to_string())
}

/// A repository (`owner/repo`, or `http(s)://host/owner/repo`) as its URL
/// without a trailing `/`; the reason when it is neither.
pub(crate) fn repository_url(repo: &str) -> std::result::Result<String, &'static str> {
    const SHAPE: &str = "must be owner/repo or a repository URL like https://github.com/owner/repo";
    let trimmed = repo.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    if !trimmed.contains("://") {
        return match trimmed.split_once('/') {
            Some((owner, name)) if name_ok(owner) && name_ok(name) => {
                Ok(format!("https://github.com/{owner}/{name}"))
            }
            _ => Err(SHAPE),
        };
    }
    // A URL: it must make a valid issue URL.
    let url = format!("{trimmed}/issues/1");
    match issue_url_problem(&url) {
        None if !trimmed.contains(['?', '#']) => Ok(trimmed.to_string()),
        _ => Err(SHAPE),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn issue_url_problem(url: &str) -> Option<&'static str> {
    if url.trim().is_empty() {
        return Some("the issue URL is missing");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains whitespace or control characters");
    }
    let Some(rest) = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))
    else {
        return Some("not an http(s) URL");
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host_problem(authority).is_some() {
        return Some("the host is missing or is not a host name");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let [owner, repo, kind, number] = segments[..] else {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    };
    if owner.is_empty() || repo.is_empty() {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    }
    let name_ok = |s: &str| {
        s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    if !name_ok(owner) || !name_ok(repo) {
        return Some("owner and repository may contain only letters, digits, '.', '_' and '-'");
    }
    if kind == "pull" {
        return Some("this is a pull request URL, not an issue URL");
    }
    if kind != "issues" {
        return Some("path must be /<owner>/<repo>/issues/<number>");
    }
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Some("issue number must be digits");
    }
    if number.bytes().all(|b| b == b'0') {
        return Some("issue number must be 1 or more");
    }
    None
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- issue URLs -----------------------------------------------------

    #[test]
    fn issue_url_table() {
        let valid = [
            "https://github.com/owner/repo/issues/42",
            "http://github.com/owner/repo/issues/42",
            "HTTPS://github.com/owner/repo/issues/42",
            "https://www.github.com/owner/repo/issues/42",
            "https://github.com/owner/repo/issues/42/",
            "https://github.com/owner/repo/issues/42#issuecomment-1",
            "https://github.com/owner/repo/issues/42?x=1",
            "https://ghe.example.com:8443/team/app/issues/7",
            "https://github.com/My-Org/repo.name_x/issues/1",
        ];
        for url in valid {
            assert!(
                validate_issue_url(url).is_ok(),
                "{url}: {:?}",
                validate_issue_url(url)
            );
        }
        let invalid = [
            ("", "missing"),
            ("   ", "missing"),
            ("github.com/o/r/issues/1", "not an http(s) URL"),
            ("ftp://github.com/o/r/issues/1", "not an http(s) URL"),
            ("https:/github.com/o/r/issues/1", "not an http(s) URL"),
            ("https://github.com/o/r/issues/1 ", "whitespace"),
            ("https://github.com/o r/x/issues/1", "whitespace"),
            ("https://github.com/o/r/issues/1\n", "control"),
            ("https:///o/r/issues/1", "host"),
            ("https://user@github.com/o/r/issues/1", "host"),
            ("https://github.com", "path must be"),
            ("https://github.com/", "path must be"),
            ("https://github.com/o/r", "path must be"),
            ("https://github.com/o/r/issues", "path must be"),
            ("https://github.com/o/r/issues/", "path must be"),
            ("https://github.com/o/r/issues/1/comments", "path must be"),
            ("https://github.com//r/issues/1", "path must be"),
            ("https://github.com/o/r/tree/1", "path must be"),
            ("https://github.com/o/r/pull/1", "pull request"),
            (
                "https://github.com/o/r/issues/abc",
                "issue number must be digits",
            ),
            (
                "https://github.com/o/r/issues/-1",
                "issue number must be digits",
            ),
            ("https://github.com/o/r/issues/0", "1 or more"),
            ("https://github.com/o$/r/issues/1", "owner and repository"),
            ("https://github.com/../r/issues/1", "owner and repository"),
        ];
        for (url, want) in invalid {
            match validate_issue_url(url) {
                Err(Error::InvalidIssueUrl { url: u, reason }) => {
                    assert_eq!(u, url);
                    assert!(reason.contains(want), "{url:?}: {reason:?} lacks {want:?}");
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }
}
