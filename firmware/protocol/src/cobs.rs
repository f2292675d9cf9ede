//! Consistent Overhead Byte Stuffing: removes every 0x00 from a frame so that 0x00 can
//! delimit frames, at a cost of one byte per 254.

/// Encodes `src` into `dst`; returns the encoded length, or `None` if `dst` is too small.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    if dst.is_empty() {
        return None;
    }
    for &b in src {
        if b == 0 {
            *dst.get_mut(code_at)? = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = b;
            out += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_at)? = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_at)? = code;
    Some(out)
}

/// Decodes a COBS frame (without its delimiter) in place; returns the decoded length, or
/// `None` if the bytes are not valid COBS.
pub fn decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let mut read = 0;
    let mut write = 0;
    while read < buf.len() {
        let code = buf[read];
        if code == 0 {
            return None;
        }
        read += 1;
        let run = usize::from(code) - 1;
        if read + run > buf.len() {
            return None;
        }
        for k in 0..run {
            let b = buf[read + k];
            if b == 0 {
                return None;
            }
            buf[write] = b;
            write += 1;
        }
        read += run;
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Some(write)
}
