//! shmkit's SPSC channels driven through the C ABI: ping calls `libshmkit.so`'s
//! `extern "C"` functions (loaded with dlopen), the calls a C program makes; pong is
//! the `shmkit-adaptive` row's Rust pong. Against that row (same channels, same pong,
//! ping in Rust) this is what the C boundary costs: the calls through the shared
//! library, the handle checks, `catch_unwind`.
//!
//! The library is `$SHMKIT_C_LIB`, or `libshmkit.so` beside the `shmkit` binary (cargo
//! puts it there: `cargo build --release -p shmkit-c`); without it the row is n/a.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::path::PathBuf;

use super::mech::{exact, invalid, Ctx, Link};
use super::shmkit_chan::Shmkit;

type Open = unsafe extern "C" fn(*const c_char, i64, *mut *mut c_void) -> c_int;
type Send = unsafe extern "C" fn(*mut c_void, *const c_void, usize, i64) -> c_int;
type Recv = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, *mut usize, i64) -> c_int;
type Close = unsafe extern "C" fn(*mut c_void);
type LastError = unsafe extern "C" fn() -> *const c_char;

/// The functions of libshmkit.so the row uses.
pub struct Api {
    sender_open: Open,
    receiver_open: Open,
    send: Send,
    recv: Recv,
    sender_close: Close,
    receiver_close: Close,
    last_error: LastError,
}

/// Where the library is looked for.
pub fn library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHMKIT_C_LIB") {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe().ok()?.parent()?.join("libshmkit.so");
    beside.exists().then_some(beside)
}

impl Api {
    fn load() -> io::Result<Api> {
        let path = library().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "libshmkit.so not found beside shmkit (cargo build --release -p shmkit-c) or in $SHMKIT_C_LIB",
            )
        })?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; the library is never unloaded (the process
        // ends with the row).
        let lib = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(io::Error::other(format!("dlopen {}: failed", path.display())));
        }
        let sym = |name: &str| -> io::Result<*mut c_void> {
            let c_name = CString::new(name).map_err(io::Error::other)?;
            // SAFETY: a valid handle and NUL-terminated name.
            let p = unsafe { libc::dlsym(lib, c_name.as_ptr()) };
            if p.is_null() {
                return Err(io::Error::other(format!("{}: no symbol {name}", path.display())));
            }
            Ok(p)
        };
        // SAFETY: each symbol is the extern "C" function of that name in include/shmkit.h,
        // whose signature the type says.
        unsafe {
            Ok(Api {
                sender_open: std::mem::transmute::<*mut c_void, Open>(sym("shmkit_sender_open")?),
                receiver_open: std::mem::transmute::<*mut c_void, Open>(sym(
                    "shmkit_receiver_open",
                )?),
                send: std::mem::transmute::<*mut c_void, Send>(sym("shmkit_sender_send")?),
                recv: std::mem::transmute::<*mut c_void, Recv>(sym("shmkit_receiver_recv")?),
                sender_close: std::mem::transmute::<*mut c_void, Close>(sym(
                    "shmkit_sender_close",
                )?),
                receiver_close: std::mem::transmute::<*mut c_void, Close>(sym(
                    "shmkit_receiver_close",
                )?),
                last_error: std::mem::transmute::<*mut c_void, LastError>(sym(
                    "shmkit_last_error",
                )?),
            })
        }
    }

    fn check(&self, rc: c_int, what: &str) -> io::Result<()> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: shmkit_last_error returns a valid NUL-terminated string.
        let why = unsafe { std::ffi::CStr::from_ptr((self.last_error)()) };
        Err(io::Error::other(format!("{what}: {} ({rc})", why.to_string_lossy())))
    }
}

pub enum CAbi {
    Pong(Box<Shmkit>),
    Ping { api: Api, tx: *mut c_void, rx: *mut c_void },
}

impl Link for CAbi {
    fn pong(ctx: &Ctx, ready: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<CAbi> {
        // Fail before the channels exist, so that the row says why.
        library().ok_or_else(|| invalid("libshmkit.so not found"))?;
        Shmkit::pong(ctx, ready).map(|p| CAbi::Pong(Box::new(p)))
    }

    fn ping(ctx: &Ctx, _rendezvous: &str) -> io::Result<CAbi> {
        let api = Api::load()?;
        let req =
            CString::new(format!("posix:{}", ctx.posix_name("req"))).map_err(io::Error::other)?;
        let rep =
            CString::new(format!("posix:{}", ctx.posix_name("rep"))).map_err(io::Error::other)?;
        let (mut tx, mut rx) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: valid strings and out-pointers, per the header.
        unsafe {
            api.check((api.sender_open)(req.as_ptr(), 0, &mut tx), "shmkit_sender_open")?;
            api.check((api.receiver_open)(rep.as_ptr(), 0, &mut rx), "shmkit_receiver_open")?;
        }
        Ok(CAbi::Ping { api, tx, rx })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            CAbi::Pong(p) => p.send(msg),
            // SAFETY: a live handle and msg.len() readable bytes.
            CAbi::Ping { api, tx, .. } => api.check(
                unsafe { (api.send)(*tx, msg.as_ptr().cast(), msg.len(), -1) },
                "shmkit_sender_send",
            ),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            CAbi::Pong(p) => p.recv(buf),
            CAbi::Ping { api, rx, .. } => {
                let mut n = 0usize;
                // SAFETY: a live handle, buf.len() writable bytes and a length to fill.
                let rc = unsafe { (api.recv)(*rx, buf.as_mut_ptr().cast(), buf.len(), &mut n, -1) };
                api.check(rc, "shmkit_receiver_recv")?;
                exact(n, buf.len())
            }
        }
    }
}

impl Drop for CAbi {
    fn drop(&mut self) {
        if let CAbi::Ping { api, tx, rx } = self {
            // SAFETY: handles made by the library, closed once.
            unsafe {
                (api.sender_close)(*tx);
                (api.receiver_close)(*rx);
            }
        }
    }
}
