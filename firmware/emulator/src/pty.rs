//! Pseudo-terminal pairs: the "serial ports" of the simulated line.
//!
//! The master end is the device's side (the emulator, the simulated reader); the slave path
//! is what the appliance opens as its serial port. The termios is raw from the start, so the
//! line discipline never echoes or rewrites a byte, and we keep the slave open ourselves so
//! that the master never reports EIO while the appliance is not attached yet.

use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A pseudo-terminal pair.
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    slave_path: PathBuf,
}

impl Pty {
    /// Opens a raw pseudo-terminal pair.
    pub fn open() -> io::Result<Pty> {
        let pair = openpty(None, None).map_err(io::Error::from)?;
        let mut t = tcgetattr(&pair.slave).map_err(io::Error::from)?;
        cfmakeraw(&mut t);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        let slave_path = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;
        // openpty's descriptors are inherited by every child process, which would keep the
        // master open in, say, the appliance under test, and an unplug (`hang_up`) would
        // never reach it. `try_clone` duplicates with close-on-exec set.
        Ok(Pty {
            master: pair.master.try_clone()?,
            slave: pair.slave.try_clone()?,
            slave_path,
        })
    }

    /// The path the appliance opens, e.g. `/dev/pts/7`.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// A handle on the master end (blocking reads and writes).
    pub fn master(&self) -> io::Result<File> {
        Ok(File::from(self.master.try_clone()?))
    }

    /// Simulates an unplug: closes our ends. Once every master handle from [`Pty::master`]
    /// is closed too, the appliance's I/O on the slave fails, as with a pulled USB cable.
    pub fn hang_up(self) {
        drop(self.slave);
        drop(self.master);
    }
}
