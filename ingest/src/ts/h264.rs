//! H.264 helpers: Annex B splitting, avcC building, SPS facts.

use bytes::{BufMut, Bytes, BytesMut};

pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;
pub const NAL_FILLER: u8 = 12;

/// The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes),
/// without start codes and trailing zero bytes. Empty units are skipped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                push_nal(&mut out, &data[s..i]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_nal(&mut out, &data[s..]);
    }
    out
}

fn push_nal<'a>(out: &mut Vec<&'a [u8]>, mut nal: &'a [u8]) {
    while let [rest @ .., 0] = nal {
        nal = rest;
    }
    if !nal.is_empty() {
        out.push(nal);
    }
}

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// What an access unit carries.
pub struct AccessUnit {
    /// AVCC payload (4-byte lengths), without AUD and filler.
    pub avcc: Bytes,
    pub keyframe: bool,
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

/// Convert an Annex B access unit to AVCC, noting IDR and parameter sets.
pub fn annex_b_to_avcc(data: &[u8]) -> AccessUnit {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    let mut keyframe = false;
    let mut sps = None;
    let mut pps = None;
    for nal in split_annex_b(data) {
        match nal_type(nal) {
            NAL_AUD | NAL_FILLER => continue,
            NAL_IDR => keyframe = true,
            NAL_SPS => sps = Some(Bytes::copy_from_slice(nal)),
            NAL_PPS => pps = Some(Bytes::copy_from_slice(nal)),
            _ => {}
        }
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    AccessUnit {
        avcc: out.freeze(),
        keyframe,
        sps,
        pps,
    }
}

/// Build an AVCDecoderConfigurationRecord from one SPS and one PPS.
/// None when the SPS is too short to carry profile and level.
pub fn build_avcc(sps: &[u8], pps: &[u8]) -> Option<Bytes> {
    if sps.len() < 4 || sps.len() > 0xffff || pps.len() > 0xffff || pps.is_empty() {
        return None;
    }
    let mut b = BytesMut::with_capacity(11 + sps.len() + pps.len());
    b.put_u8(1);
    b.put_u8(sps[1]);
    b.put_u8(sps[2]);
    b.put_u8(sps[3]);
    b.put_u8(0xff); // 4-byte NAL lengths
    b.put_u8(0xe1); // one SPS
    b.put_u16(sps.len() as u16);
    b.put_slice(sps);
    b.put_u8(1);
    b.put_u16(pps.len() as u16);
    b.put_slice(pps);
    Some(b.freeze())
}

/// Width and height from an SPS NAL unit.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    let rbsp = h264_reader::rbsp::decode_nal(sps).ok()?;
    let sps = h264_reader::nal::sps::SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(
        &rbsp[..],
    ))
    .ok()?;
    sps.pixel_dimensions().ok()
}

/// RFC 6381 codec string of an SPS, e.g. `avc1.64001f`.
pub fn codec_string(sps: &[u8]) -> String {
    match sps {
        [_, p, c, l, ..] => format!("avc1.{p:02x}{c:02x}{l:02x}"),
        _ => "avc1".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 1, 0x41, 7,
        ];
        let nals = split_annex_b(&data);
        assert_eq!(
            nals,
            vec![&[9, 0xf0][..], &[0x65, 1, 2][..], &[0x41, 7][..]]
        );
        let au = annex_b_to_avcc(&data);
        assert!(au.keyframe);
        assert_eq!(
            &au.avcc[..],
            &[0, 0, 0, 3, 0x65, 1, 2, 0, 0, 0, 2, 0x41, 7][..]
        );
    }

    #[test]
    fn garbage_is_not_a_nal() {
        assert!(split_annex_b(&[1, 2, 3, 0, 0]).is_empty());
        assert!(!annex_b_to_avcc(&[0xff; 10]).keyframe);
    }
}
