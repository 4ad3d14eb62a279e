//! The two DTLS calls the openssl crate does not wrap. Each takes an `SslRef` the caller
//! owns, so the pointer is live for the call; none keeps it.
#![allow(unsafe_code)]

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::SslRef;

// Not in openssl-sys: `DTLSv1_listen`, and the `SSL_ctrl` command behind the
// `DTLSv1_handle_timeout` macro (openssl/ssl.h). `DTLSv1_get_timeout` is not used: it
// writes a `struct timeval`, whose size on 32-bit ARM follows how OpenSSL was built.
unsafe extern "C" {
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut libc::c_void) -> libc::c_int;
    fn BIO_ADDR_new() -> *mut libc::c_void;
    fn BIO_ADDR_free(addr: *mut libc::c_void);
}
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

/// Retransmits `ssl`'s last handshake flight if its timer has expired; nothing otherwise.
pub fn handle_timeout(ssl: &SslRef) {
    // SAFETY: `ssl` is live; the command takes no argument.
    unsafe {
        openssl_sys::SSL_ctrl(ssl.as_ptr(), DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut());
    }
    drop(ErrorStack::get());
}
