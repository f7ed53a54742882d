//! signalroom's browser client, compiled to WASM: asks for a room, talks to the relay, and
//! makes a WebRTC call with whoever else is in the room.
//!
//! Code map: [`config`] reads the page address; [`relay`] is the WebSocket transport;
//! [`codec`] turns frames into text and back; [`room`] is the room logic; [`call`] the
//! WebRTC session, with [`negotiation`] its perfect-negotiation decisions and [`media`] the
//! camera; [`ui`] the page's elements; [`app`] the event loop that ties them together.

pub mod app;
pub mod call;
pub mod codec;
pub mod config;
pub mod media;
pub mod negotiation;
pub mod relay;
pub mod room;
pub mod ui;

use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point: runs when the page loads the WASM.
#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(app::run());
}

/// The page's allocator: an address-sorted free list that merges neighbouring free blocks,
/// 7.9 kB smaller in the WASM than the standard library's dlmalloc (3.2 KiB gzipped). The
/// page allocates little and seldom (frames, log lines, SDP text): a linear search is cheap.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

#[cfg(all(test, target_arch = "wasm32"))]
mod tests {
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_browser);

    /// Blocks of many sizes and alignments, freed and grown out of order, keep their bytes.
    #[wasm_bindgen_test]
    fn the_allocator_keeps_every_block_intact() {
        let mut seed: u32 = 12345;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut blocks: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut wide: Vec<Vec<u128>> = Vec::new();
        for round in 0..20_000u32 {
            let choice = next();
            match choice % 5 {
                0 | 1 => {
                    let len = (next() % if choice % 97 == 0 { 200_000 } else { 300 }) as usize;
                    let fill = (next() % 251) as u8;
                    blocks.push((fill, vec![fill; len]));
                }
                2 if !blocks.is_empty() => {
                    let at = next() as usize % blocks.len();
                    let (fill, block) = blocks.swap_remove(at);
                    assert!(block.iter().all(|&b| b == fill), "round {round}");
                }
                3 if !blocks.is_empty() => {
                    let at = next() as usize % blocks.len();
                    let (fill, block) = &mut blocks[at];
                    block.extend(std::iter::repeat_n(*fill, (next() % 500) as usize));
                }
                _ => {
                    let block = vec![u128::from(round); (next() % 8) as usize];
                    assert_eq!(block.as_ptr().align_offset(16), 0);
                    wide.push(block);
                    if wide.len() > 50 {
                        let gone = wide.swap_remove(next() as usize % wide.len());
                        assert!(gone.windows(2).all(|w| w[0] == w[1]), "round {round}");
                    }
                }
            }
        }
        for (fill, block) in &blocks {
            assert!(block.iter().all(|b| b == fill));
        }
        for block in &wide {
            assert!(block.windows(2).all(|w| w[0] == w[1]));
        }
    }
}
