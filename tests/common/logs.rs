//! Reading relaunch's log lines: events and their fields.

/// The value of `key=value` in a log line (up to the next whitespace).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// The value of `key=` to the end of the line, for fields that may contain spaces and always
/// come last (`reason=`, `status=`).
pub fn field_rest<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&needle) {
        let start = from + pos;
        let at_token_start = start == 0 || line[..start].ends_with(char::is_whitespace);
        if at_token_start {
            return Some(line[start + needle.len()..].trim_end());
        }
        from = start + needle.len();
    }
    None
}

/// `field` parsed as a pid (or any integer).
pub fn field_i32(line: &str, key: &str) -> Option<i32> {
    field(line, key)?.parse().ok()
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// The message part of one of relaunch's own log lines (`<timestamp>  INFO message k=v`): the
/// words after the level. None for the output of its children, which shares the same stderr.
/// The level is looked for anywhere in the line, in case a child's partial write precedes it.
pub fn log_message(line: &str) -> Option<Vec<&str>> {
    let mut tokens = line.split_whitespace();
    tokens.by_ref().find(|t| LEVELS.contains(t))?;
    Some(tokens.collect())
}

/// True for relaunch's own log lines, as opposed to its children's output.
pub fn is_log_line(line: &str) -> bool {
    log_message(line).is_some()
}

/// True if `line` is a relaunch log line whose message contains the words of `msg` in order
/// (e.g. `is_event(line, "reload complete")`); punctuation at the end of a word is ignored, so
/// `"stop timeout"` matches `stop timeout, sending SIGKILL`.
pub fn is_event(line: &str, msg: &str) -> bool {
    let Some(message) = log_message(line) else {
        return false;
    };
    let word = |w: &str| w.trim_end_matches([',', ':', ';', '.']).to_owned();
    let wanted: Vec<String> = msg.split_whitespace().map(word).collect();
    let tokens: Vec<String> = message.into_iter().map(word).collect();
    !wanted.is_empty() && tokens.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

/// `is_event` plus `key=value` for every pair of `fields`.
pub fn event_matches(line: &str, msg: &str, fields: &[(&str, &str)]) -> bool {
    is_event(line, msg) && fields.iter().all(|(k, v)| field(line, k) == Some(*v))
}

//
