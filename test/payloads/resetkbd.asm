; resetkbd.asm - reset.asm variant: reset through the i8042 (0x64 <- 0xFE).
; Output: "resetting via i8042", then the VM resets (tsbhyve exit 0).
%define RESET_KBD
%include "reset.asm"
