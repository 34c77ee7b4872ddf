//! Colour where a person reads (doctor's ok/FAIL, errors, the final status
//! line): only on a terminal, and never when `NO_COLOR` is set
//! (<https://no-color.org>).

use std::io::IsTerminal;

/// A colour.
#[derive(Debug, Clone, Copy)]
pub enum Colour {
    /// Failures.
    Red,
    /// Success.
    Green,
    /// Warnings.
    Yellow,
}

/// Colour is wanted on a stream that `is_terminal`, unless `NO_COLOR` is
/// set to a non-empty value.
pub fn wanted(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Colour for stdout.
pub fn on_stdout() -> bool {
    wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Colour for stderr.
pub fn on_stderr() -> bool {
    wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// `text` in `colour` when `on`, else as it is.
pub fn paint(on: bool, colour: Colour, text: &str) -> String {
    if !on {
        return text.to_string();
    }
    let code = match colour {
        Colour::Red => "1;31",
        Colour::Green => "32",
        Colour::Yellow => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(wanted(true, None));
        assert!(wanted(true, Some(OsStr::new(""))));
        assert!(!wanted(true, Some(OsStr::new("1"))));
        assert!(!wanted(false, None));
        assert_eq!(paint(false, Colour::Red, "FAIL"), "FAIL");
        assert_eq!(paint(true, Colour::Red, "FAIL"), "\x1b[1;31mFAIL\x1b[0m");
    }
}
