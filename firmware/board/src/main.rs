//! The line controller on an STM32F411 "Black Pill": the firmware core on real pins.
//!
//! - TIM2 (32-bit) counts the belt encoder in quadrature on PA0/PA1, so the core's wrapping
//!   `u32` count is the hardware counter itself.
//! - TIM5 (32-bit) counts milliseconds for the core's clock.
//! - USART1 on PA9 (TX) / PA10 (RX), 115200 8N1, is the link to the appliance.
//! - PB0 reads the photo-eye (high = beam blocked); PB1 drives the diverter's solenoid;
//!   PB12/PB13/PB14 drive the stack light (green/amber/red).
//! - The independent watchdog resets the MCU if the main loop stalls for 100 ms.
//!
//! Fail-safe wiring: the solenoid is energised to *pass*. When the core asks to divert, or
//! the MCU resets, hangs or loses power, the solenoid drops and the diverter falls to the
//! inspection lane.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use cortex_m_rt::entry;
use embedded_hal::digital::{ErrorType, OutputPin};
use panic_halt as _;
use screenline_controller::{Clock, Controller, EncoderCount, StackLightPins};
use screenline_protocol::{
    encode_frame, ControllerConfig, FrameDecoder, ToAppliance, ToController, MAX_FRAME_LEN,
};
use stm32f4xx_hal::{
    pac,
    prelude::*,
    qei::Qei,
    rcc::Config,
    serial::{Rx, Tx},
    timer::CounterMs,
    watchdog::IndependentWatchdog,
};

/// Firmware version reported in Hello.
const FIRMWARE: [u8; 3] = [0, 1, 0];

/// Defaults until the appliance configures the line.
const DEFAULT_CONFIG: ControllerConfig = ControllerConfig::UNCONFIGURED;

/// Parcels tracked between the photo-eye and the gate.
const QUEUE: usize = 32;

/// The belt encoder on TIM2.
struct BeltEncoder(Qei<pac::TIM2>);

impl EncoderCount for BeltEncoder {
    fn count(&mut self) -> u32 {
        self.0.count()
    }
}

/// Milliseconds since boot on TIM5.
struct Millis(CounterMs<pac::TIM5>);

impl Clock for Millis {
    fn now_ms(&mut self) -> u32 {
        self.0.now().ticks()
    }
}

/// The diverter's solenoid, energised to pass: the core's "divert" (high) de-energises it.
struct PassSolenoid<P>(P);

impl<P: ErrorType> ErrorType for PassSolenoid<P> {
    type Error = P::Error;
}

impl<P: OutputPin> OutputPin for PassSolenoid<P> {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.set_high()
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.set_low()
    }
}

/// Sends one message to the appliance.
fn send(tx: &mut Tx<pac::USART1>, seq: &mut u16, msg: &ToAppliance) {
    let mut frame = [0u8; MAX_FRAME_LEN];
    if let Ok(n) = encode_frame(*seq, msg, &mut frame) {
        *seq = seq.wrapping_add(1);
        for &b in &frame[..n] {
            // A UART error on transmit leaves nothing to retry with; the appliance's decoder
            // drops the damaged frame and resynchronises.
            let _ = nb::block!(tx.write(b));
        }
    }
}

#[entry]
fn main() -> ! {
    let Some(dp) = pac::Peripherals::take() else {
        panic!("peripherals taken twice")
    };
    // APB1 at 24 MHz puts the timers on it at 48 MHz, so that TIM5 can divide down to 1 kHz
    // with its 16-bit prescaler.
    let mut rcc = dp
        .RCC
        .freeze(Config::hse(25.MHz()).sysclk(96.MHz()).pclk1(24.MHz()));

    let mut watchdog = IndependentWatchdog::new(dp.IWDG);
    watchdog.start(100.millis());

    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);

    // The solenoid starts de-energised: inspection lane until the core says otherwise.
    let mut solenoid = gpiob.pb1.into_push_pull_output();
    solenoid.set_low();
    let gate = PassSolenoid(solenoid);
    let eye = gpiob.pb0.into_pull_down_input();
    let light = StackLightPins {
        green: gpiob.pb12.into_push_pull_output(),
        amber: gpiob.pb13.into_push_pull_output(),
        red: gpiob.pb14.into_push_pull_output(),
    };

    let encoder = BeltEncoder(Qei::new(dp.TIM2, (gpioa.pa0, gpioa.pa1), &mut rcc));
    let mut millis = dp.TIM5.counter_ms(&mut rcc);
    if millis.start(u32::MAX.millis()).is_err() {
        panic!("TIM5 does not take a full 32-bit period");
    }

    let Ok(serial) = dp
        .USART1
        .serial((gpioa.pa9, gpioa.pa10), 115_200.bps(), &mut rcc)
    else {
        panic!("USART1 configuration rejected")
    };
    let (mut tx, mut rx): (Tx<pac::USART1>, Rx<pac::USART1>) = serial.split();

    let mut controller: Controller<_, _, _, _, _, _, _, QUEUE> = Controller::new(
        eye,
        gate,
        light,
        encoder,
        Millis(millis),
        DEFAULT_CONFIG,
        FIRMWARE,
    );
    let mut decoder = FrameDecoder::<{ MAX_FRAME_LEN * 2 }>::new();
    let mut seq = 0u16;

    loop {
        // Drain what the UART has; errors (overrun, framing) only cost the frame they hit.
        loop {
            match rx.read() {
                Ok(byte) => {
                    if let Some(Ok(frame)) = decoder.push::<ToController>(byte) {
                        controller.handle(&frame.msg, &mut |m| send(&mut tx, &mut seq, &m));
                    }
                }
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(_)) => continue,
            }
        }
        controller.poll(&mut |m| send(&mut tx, &mut seq, &m));
        watchdog.feed();
    }
}
