//! The server's command line, as the user gave it. A leaf type: the spawner, the daemon's path
//! fix-up, the file watcher and the configuration all name it.

use std::ffi::OsString;

/// The server's command line. The program is looked up in `PATH` again at every spawn (when it
/// has no `/`), so a rebuilt or redeployed binary is picked up by the next generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program, as given: a path, or a name looked up in `PATH`.
    pub program: OsString,
    /// Its arguments (without argv\[0\], which is the program as given).
    pub args: Vec<OsString>,
}
