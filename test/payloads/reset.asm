; reset.asm - platform reset through the PCI reset control register.
; Real mode, runs from the ROM.
;
; Output:
;   resetting
; then writes 6 (SYS_RST | RST_CPU) to port 0xCF9 (tsbhyve: VM exits 0, like
; bhyve's reboot; QEMU -no-reboot: process exits 0).  If the machine is still
; running after a delay it prints "FAIL reset still-running" and halts.
;
; resetkbd.asm builds the same file with RESET_KBD defined: it pulses the
; reset line through the i8042 instead (waits for the input buffer to be
; empty, then writes 0xFE to port 0x64) and prints "resetting via i8042".
%include "rom.inc"

ROM_BEGIN
rom_entry:
        cli
        cld
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, RM_STACK
        call uart_init16
        mov si, msg_resetting
        call puts16
        call uart_drain16
%ifdef RESET_KBD
        mov cx, 0xFFFF                  ; bounded wait for i8042 input buffer empty
.ibf:   in al, 0x64
        test al, 0x02
        jz .send
        dec cx
        jnz .ibf
.send:  mov al, 0xFE                    ; pulse output port bit 0 (CPU reset)
        out 0x64, al
%else
        mov dx, 0xCF9
        mov al, 0x06
        out dx, al
%endif
        mov ecx, 0x00200000             ; still here? give the reset time, then complain
.wait:  dec ecx
        jnz .wait
        mov si, msg_fail
        call puts16
        call uart_drain16
.halt:  cli
        hlt
        jmp .halt

%ifdef RESET_KBD
msg_resetting:  db "resetting via i8042", 13, 10, 0
%else
msg_resetting:  db "resetting", 13, 10, 0
%endif
msg_fail:       db "FAIL reset still-running", 13, 10, 0

%include "uart16.inc"
ROM_END
