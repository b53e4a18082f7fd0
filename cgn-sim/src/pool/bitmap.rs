//! The port bitmap of one pool address and protocol: one bit per port, set while the port is
//! bound, held or permanently excluded (port 0, reserved ports, PCP's own UDP ports), with a
//! count of set bits and a word-at-a-time scan for a free port.

pub(super) const WORDS: usize = 65536 / 64;

/// One bit per port.
#[derive(Clone)]
pub(super) struct PortBitmap {
    words: Box<[u64; WORDS]>,
    /// Ports set (taken, held or excluded).
    pub(super) used: u32,
}

impl std::fmt::Debug for PortBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortBitmap({} used)", self.used)
    }
}

impl PortBitmap {
    pub(super) fn new() -> PortBitmap {
        PortBitmap {
            words: Box::new([0; WORDS]),
            used: 0,
        }
    }
    pub(super) fn get(&self, port: u16) -> bool {
        self.words[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }
    pub(super) fn set(&mut self, port: u16) -> bool {
        let w = &mut self.words[usize::from(port) / 64];
        let bit = 1 << (port % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.used += 1;
        true
    }
    pub(super) fn clear(&mut self, port: u16) {
        let w = &mut self.words[usize::from(port) / 64];
        let bit = 1 << (port % 64);
        if *w & bit != 0 {
            *w &= !bit;
            self.used -= 1;
        }
    }
    /// First free port in `lo..=hi` at or after `start` (wrapping), whose parity matches
    /// `parity` when given.
    /// Takes the first free port of `lo..=hi` from `start` on (wrapping) with `parity` if
    /// given, else of either parity; `None`: the range is full.
    pub(super) fn take_scanned(
        &mut self,
        lo: u16,
        hi: u16,
        start: u16,
        parity: Option<u16>,
    ) -> Option<u16> {
        let port = self
            .scan(lo, hi, start, parity)
            .or_else(|| parity.and_then(|_| self.scan(lo, hi, start, None)))?;
        self.set(port);
        Some(port)
    }

    pub(super) fn scan(&self, lo: u16, hi: u16, start: u16, parity: Option<u16>) -> Option<u16> {
        let mask = match parity {
            Some(0) => 0x5555_5555_5555_5555u64,
            Some(_) => 0xaaaa_aaaa_aaaa_aaaau64,
            None => u64::MAX,
        };
        let (lo32, hi32) = (u32::from(lo), u32::from(hi));
        let span = hi32 - lo32 + 1;
        let mut pos = u32::from(start.clamp(lo, hi));
        let mut scanned = 0u32;
        while scanned < span + 64 {
            let word_index = (pos / 64) as usize;
            let base = (pos / 64) * 64;
            let mut free = !self.words[word_index] & mask;
            // Keep only bits ≥ pos and ≤ hi, and ≥ lo.
            let from = pos - base;
            free &= u64::MAX << from;
            if base + 63 > hi32 {
                let keep = hi32 - base;
                free &= if keep >= 63 {
                    u64::MAX
                } else {
                    (1u64 << (keep + 1)) - 1
                };
            }
            if base < lo32 {
                free &= u64::MAX << (lo32 - base);
            }
            if free != 0 {
                let port = base + free.trailing_zeros();
                return u16::try_from(port).ok();
            }
            let advanced = base + 64 - pos;
            scanned += advanced;
            pos = base + 64;
            if pos > hi32 {
                pos = lo32;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_last_free_port_with_parity() {
        let mut b = PortBitmap::new();
        for port in 1024..=65535u16 {
            if port != 40001 && port != 40002 {
                b.set(port);
            }
        }
        assert_eq!(b.scan(1024, 65535, 50000, Some(1)), Some(40001));
        assert_eq!(b.scan(1024, 65535, 1024, Some(0)), Some(40002));
        assert_eq!(b.scan(1024, 40000, 1024, None), None);
    }
}
