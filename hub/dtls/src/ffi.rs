//! The three DTLS calls the openssl crate does not wrap. Each takes an `SslRef` the caller
//! owns, so the pointer is live for the call; none keeps it.
#![allow(unsafe_code)]

use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::SslRef;

// Not in openssl-sys: `DTLSv1_listen` and the two `SSL_ctrl` commands behind the
// `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` macros (openssl/ssl.h).
unsafe extern "C" {
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut libc::c_void) -> libc::c_int;
    fn BIO_ADDR_new() -> *mut libc::c_void;
    fn BIO_ADDR_free(addr: *mut libc::c_void);
}
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

/// Runs OpenSSL's stateless listen on the datagrams `ssl`'s stream has to read: answers a
/// ClientHello without a valid cookie with a HelloVerifyRequest and keeps nothing. `true`
/// once a ClientHello came back with a valid cookie: `ssl` is then that peer's, and its
/// handshake goes on with `accept`.
pub fn listen(ssl: &SslRef) -> Result<bool, ErrorStack> {
    // SAFETY: `ssl` is live; the address is allocated and freed here, and OpenSSL only
    // writes the peer's address into it (left empty by a stream that is not a socket).
    let result = unsafe {
        let client = BIO_ADDR_new();
        if client.is_null() {
            return Err(ErrorStack::get());
        }
        let result = DTLSv1_listen(ssl.as_ptr(), client);
        BIO_ADDR_free(client);
        result
    };
    // A datagram it dropped (too short, not a ClientHello) leaves errors in this thread's
    // queue: take them, so they are not read as another connection's.
    let errors = ErrorStack::get();
    match result {
        1 => Ok(true),
        0 => Ok(false),
        _ => Err(errors),
    }
}

/// When `ssl`'s handshake retransmission timer fires, if it runs.
pub fn retransmit_in(ssl: &SslRef) -> Option<Duration> {
    let mut left = libc::timeval { tv_sec: 0, tv_usec: 0 };
    // SAFETY: `ssl` is live; OpenSSL writes one `struct timeval` through the pointer.
    let running = unsafe {
        openssl_sys::SSL_ctrl(ssl.as_ptr(), DTLS_CTRL_GET_TIMEOUT, 0, (&raw mut left).cast::<libc::c_void>())
    };
    let seconds = u64::try_from(left.tv_sec).unwrap_or(0);
    let micros = u64::try_from(left.tv_usec).unwrap_or(0);
    (running == 1).then(|| Duration::from_secs(seconds) + Duration::from_micros(micros))
}

/// Retransmits `ssl`'s last handshake flight if its timer has fired.
pub fn handle_timeout(ssl: &SslRef) {
    // SAFETY: `ssl` is live; the command takes no argument.
    unsafe {
        openssl_sys::SSL_ctrl(ssl.as_ptr(), DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut());
    }
    drop(ErrorStack::get());
}
