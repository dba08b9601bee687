//! Sans-IO fMP4/CMAF writer: the init segment from a [`MediaInfo`] and one
//! `moof`+`mdat` fragment per LL-HLS part.
//!
//! Track 1 is video (timescale 90 kHz, the node's clock), track 2 is audio
//! (timescale = sample rate). Decode times are media times since the
//! muxer's origin; nothing here reads a clock or a socket.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, Codec, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Mdhd, Mdia, Mfhd,
    Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun,
    TrunEntry, Url, Visual, Vmhd,
};

use super::HlsError;
use banyan_relay::{MediaInfo, CLOCK_HZ};

/// Track id of the video track in every init segment.
pub const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track in every init segment.
pub const AUDIO_TRACK: u32 = 2;

/// Sample flags: a sync sample (depends on no other).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags: depends on others, not a sync sample.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition offset (pts - dts) in the track's timescale.
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// The samples of one track inside a fragment.
#[derive(Debug, Clone, Default)]
pub struct TrackRun {
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    pub samples: Vec<Sample>,
}

fn mp4(e: mp4_atom::Error) -> HlsError {
    HlsError::Mp4(e.to_string())
}

/// Audio timescale of an info (its sample rate, or 48000 when absent).
pub fn audio_timescale(info: &MediaInfo) -> u32 {
    info.audio
        .as_ref()
        .map(|a| a.sample_rate)
        .filter(|&r| r > 0)
        .unwrap_or(48_000)
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Profile, sampling frequency index and channel configuration from an
/// AudioSpecificConfig, falling back to the info's fields.
fn asc_fields(asc: &[u8], sample_rate: u32, channels: u8) -> (u8, u8, u8) {
    let by_rate = AAC_RATES
        .iter()
        .position(|&r| r == sample_rate)
        .unwrap_or(3) as u8;
    if asc.len() >= 2 {
        let profile = asc[0] >> 3;
        let freq = ((asc[0] & 7) << 1) | (asc[1] >> 7);
        let chan = (asc[1] >> 3) & 0x0f;
        if (1..31).contains(&profile) && freq < 13 {
            return (profile, freq, chan);
        }
    }
    (2, by_rate, channels.clamp(1, 7))
}

/// The init segment (`ftyp` + `moov`) for a codec configuration.
pub fn init_segment(info: &MediaInfo) -> Result<Bytes, HlsError> {
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    if let Some(v) = &info.video {
        let mut avcc = Avcc::decode_body(&mut &v.avcc[..]).map_err(mp4)?;
        // Frame payloads always carry 4-byte NAL lengths.
        avcc.length_size = 4;
        let width = u16::try_from(v.width).unwrap_or(u16::MAX);
        let height = u16::try_from(v.height).unwrap_or(u16::MAX);
        traks.push(Trak {
            tkhd: Tkhd {
                track_id: VIDEO_TRACK,
                enabled: true,
                width: width.into(),
                height: height.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: CLOCK_HZ as u32,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: FourCC::new(b"vide"),
                    name: "Banyan video".into(),
                },
                minf: Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: Dinf {
                        dref: Dref {
                            urls: vec![Url::default()],
                        },
                    },
                    stbl: Stbl {
                        stsd: mp4_atom::Stsd {
                            codecs: vec![Codec::Avc1(Avc1 {
                                visual: Visual {
                                    data_reference_index: 1,
                                    width,
                                    height,
                                    horizresolution: 72.into(),
                                    vertresolution: 72.into(),
                                    frame_count: 1,
                                    compressor: "".into(),
                                    depth: 24,
                                },
                                avcc,
                                ..Default::default()
                            })],
                        },
                        stco: Some(Default::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        });
        trex.push(Trex {
            track_id: VIDEO_TRACK,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    if let Some(a) = &info.audio {
        let (profile, freq_index, chan_conf) = asc_fields(&a.asc, a.sample_rate, a.channels);
        let rate = audio_timescale(info);
        traks.push(Trak {
            tkhd: Tkhd {
                track_id: AUDIO_TRACK,
                enabled: true,
                alternate_group: 1,
                volume: 1.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: rate,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: FourCC::new(b"soun"),
                    name: "Banyan audio".into(),
                },
                minf: Minf {
                    smhd: Some(Smhd::default()),
                    dinf: Dinf {
                        dref: Dref {
                            urls: vec![Url::default()],
                        },
                    },
                    stbl: Stbl {
                        stsd: mp4_atom::Stsd {
                            codecs: vec![Codec::Mp4a(Mp4a {
                                audio: Audio {
                                    data_reference_index: 1,
                                    channel_count: u16::from(a.channels.max(1)),
                                    sample_size: 16,
                                    sample_rate: u16::try_from(rate).unwrap_or(0).into(),
                                },
                                esds: Esds {
                                    es_desc: mp4_atom::esds::EsDescriptor {
                                        es_id: AUDIO_TRACK as u16,
                                        dec_config: mp4_atom::esds::DecoderConfig {
                                            object_type_indication: 0x40,
                                            stream_type: 5,
                                            up_stream: 0,
                                            buffer_size_db: Default::default(),
                                            max_bitrate: 0,
                                            avg_bitrate: 0,
                                            dec_specific: mp4_atom::esds::DecoderSpecific {
                                                profile,
                                                freq_index,
                                                chan_conf,
                                            },
                                        },
                                        sl_config: Default::default(),
                                    },
                                },
                                btrt: None,
                                taic: None,
                            })],
                        },
                        stco: Some(Default::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        });
        trex.push(Trex {
            track_id: AUDIO_TRACK,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    if traks.is_empty() {
        return Err(HlsError::NoTracks);
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Default::default()
    };
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"cmfc"),
            FourCC::new(b"mp41"),
        ],
    };
    let mut buf = Vec::with_capacity(1024);
    ftyp.encode(&mut buf).map_err(mp4)?;
    moov.encode(&mut buf).map_err(mp4)?;
    Ok(Bytes::from(buf))
}

/// One `moof`+`mdat` fragment holding the given runs (`(track id, run)`;
/// empty runs are left out). `sequence` is the fragment's `mfhd` number.
pub fn fragment(sequence: u32, runs: &[(u32, &TrackRun)]) -> Result<Bytes, HlsError> {
    let runs: Vec<_> = runs.iter().filter(|(_, r)| !r.samples.is_empty()).collect();
    let build = |offsets: &[i32]| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: runs
            .iter()
            .zip(offsets)
            .map(|((track, run), &off)| Traf {
                tfhd: Tfhd {
                    track_id: *track,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: run.base_decode_time,
                }),
                trun: vec![Trun {
                    data_offset: Some(off),
                    entries: run
                        .samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.data.len() as u32),
                            flags: Some(if s.keyframe {
                                FLAGS_SYNC
                            } else {
                                FLAGS_NON_SYNC
                            }),
                            cts: Some(s.cts),
                        })
                        .collect(),
                }],
                ..Default::default()
            })
            .collect(),
    };
    // The moof's size does not depend on the offsets' values.
    let mut probe = Vec::new();
    build(&vec![0; runs.len()])
        .encode(&mut probe)
        .map_err(mp4)?;
    let moof_len = probe.len();
    let data_len: usize = runs
        .iter()
        .flat_map(|(_, r)| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut offsets = Vec::with_capacity(runs.len());
    let mut at = moof_len + 8;
    for (_, r) in &runs {
        offsets.push(i32::try_from(at).map_err(|_| HlsError::TooLarge)?);
        at += r.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mut moof = Vec::with_capacity(moof_len);
    build(&offsets).encode(&mut moof).map_err(mp4)?;
    set_default_base_is_moof(&mut moof);
    let mdat_len = u32::try_from(8 + data_len).map_err(|_| HlsError::TooLarge)?;
    let mut out = BytesMut::with_capacity(moof.len() + 8 + data_len);
    out.put_slice(&moof);
    out.put_u32(mdat_len);
    out.put_slice(b"mdat");
    for (_, r) in &runs {
        for s in &r.samples {
            out.put_slice(&s.data);
        }
    }
    Ok(out.freeze())
}

/// Set `default-base-is-moof` in every `tfhd` of an encoded `moof` (the
/// box library does not expose the flag), so each `trun` data offset counts
/// from the start of the `moof`, whatever the number of tracks.
fn set_default_base_is_moof(moof: &mut [u8]) {
    fn boxes(buf: &[u8], start: usize, end: usize) -> Vec<(usize, usize, [u8; 4])> {
        let mut out = Vec::new();
        let mut at = start;
        while at + 8 <= end {
            let size =
                u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if size < 8 || at + size > end {
                break;
            }
            out.push((
                at,
                size,
                [buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]],
            ));
            at += size;
        }
        out
    }
    for (at, size, kind) in boxes(moof, 0, moof.len()) {
        if &kind != b"moof" {
            continue;
        }
        for (t, tsize, tkind) in boxes(moof, at + 8, at + size) {
            if &tkind != b"traf" {
                continue;
            }
            for (h, hsize, hkind) in boxes(moof, t + 8, t + tsize) {
                if &hkind == b"tfhd" && hsize >= 12 {
                    // Flags are bytes 9..12; 0x020000 is default-base-is-moof.
                    moof[h + 9] |= 0x02;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfhd_counts_from_the_moof() {
        let run = TrackRun {
            base_decode_time: 0,
            samples: vec![Sample {
                duration: 3000,
                cts: 0,
                keyframe: true,
                data: Bytes::from_static(b"abcd"),
            }],
        };
        let frag = fragment(1, &[(VIDEO_TRACK, &run), (AUDIO_TRACK, &run)]).unwrap();
        let tfhds: Vec<usize> = frag
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"tfhd")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(tfhds.len(), 2);
        for i in tfhds {
            assert_eq!(frag[i + 5] & 0x02, 0x02);
        }
        assert!(frag.ends_with(b"abcdabcd"));
    }
}
