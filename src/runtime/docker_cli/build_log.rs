//! Clean `docker build` output before it becomes events and error text:
//! the legacy builder's `DEPRECATED:` notice (four lines before every
//! build, of no use to a cldpd user) goes, and a line redrawn with `\r`
//! (`Sending build context to Docker daemon  3.072kB\r\r`) keeps only its
//! last drawing.

/// The legacy builder's notice: its first line, and the trimmed text of
/// the indented lines after it. The notice goes to stderr, the build log to
/// stdout: the lines are recognised one by one, not by position.
const NOTICE: &str = "DEPRECATED: The legacy builder is deprecated";
const NOTICE_REST: [&str; 2] = [
    "Install the buildx component to build images with BuildKit:",
    "https://docs.docker.com/go/buildx/",
];

/// A filter over the lines of one build, in order.
#[derive(Debug, Default)]
pub(crate) struct BuildLog {
    /// The notice's last line was just dropped: so is a blank line next.
    after_notice: bool,
}

impl BuildLog {
    /// The line as it should be shown, or `None` to drop it.
    pub(crate) fn clean(&mut self, line: String) -> Option<String> {
        let after_notice = std::mem::take(&mut self.after_notice);
        if line.starts_with(NOTICE) {
            return None;
        }
        let trimmed = line.trim();
        if line.starts_with(' ') && NOTICE_REST.contains(&trimmed) {
            self.after_notice = trimmed == NOTICE_REST[1];
            return None;
        }
        if after_notice && trimmed.is_empty() {
            return None;
        }
        Some(last_drawing(line))
    }

    /// [`Self::clean`] over a whole list.
    pub(crate) fn clean_all(lines: Vec<String>) -> Vec<String> {
        let mut log = BuildLog::default();
        lines.into_iter().filter_map(|l| log.clean(l)).collect()
    }
}

/// What a terminal would show of a line redrawn with carriage returns.
fn last_drawing(line: String) -> String {
    if !line.contains('\r') {
        return line;
    }
    let trimmed = line.trim_end_matches('\r');
    match trimmed.rfind('\r') {
        Some(i) => trimmed[i + 1..].to_string(),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_legacy_builder_notice_is_dropped() {
        let out = BuildLog::clean_all(lines(&[
            "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.",
            "            Install the buildx component to build images with BuildKit:",
            "            https://docs.docker.com/go/buildx/",
            "",
            "Sending build context to Docker daemon  3.072kB\r\r",
            "Step 1/3 : FROM scratch",
            " ---> ",
            "",
        ]));
        assert_eq!(
            out,
            lines(&[
                "Sending build context to Docker daemon  3.072kB",
                "Step 1/3 : FROM scratch",
                " ---> ",
                "",
            ])
        );
    }

    #[test]
    fn carriage_returns_keep_the_last_drawing() {
        let out = BuildLog::clean_all(lines(&[
            "Sending build context 1kB\rSending build context 2kB\r\r",
            "plain",
            "\r",
        ]));
        assert_eq!(out, lines(&["Sending build context 2kB", "plain", ""]));
    }

    #[test]
    fn the_notice_is_dropped_also_when_stdout_lines_come_between() {
        let out = BuildLog::clean_all(lines(&[
            "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.",
            "Sending build context to Docker daemon  3.072kB\r\r",
            "            Install the buildx component to build images with BuildKit:",
            "Step 1/3 : FROM scratch",
            "            https://docs.docker.com/go/buildx/",
            "",
            " ---> ",
        ]));
        assert_eq!(
            out,
            lines(&[
                "Sending build context to Docker daemon  3.072kB",
                "Step 1/3 : FROM scratch",
                " ---> ",
            ])
        );
    }
}
