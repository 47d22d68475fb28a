; triple.asm - triple fault: IDT limit 0 + an exception in 32-bit protected mode.
;
; Any exception vector lies beyond a zero-limit IDT, so delivery raises #GP,
; whose vector is also beyond the limit -> #DF -> beyond the limit -> triple
; fault -> shutdown (QEMU -no-reboot: process exits 0; tsbhyve: exit 3).
;
; TRIPLE_METHOD selects the faulting instruction (the variant files set it):
;   1 = ud2 (default, triple.asm)   2 = divide by zero (triplediv.asm)
;   3 = int 0x80 (tripleint.asm)
;
; Output:
;   triple: protected mode up
;   TRIPLE faulting via <ud2|div0|int80>
; and then nothing: the VM must shut down.  If execution continues past the
; faulting instruction it prints "FAIL triple no-shutdown" and exits 1 on 0xF4.
%include "rom.inc"

%ifndef TRIPLE_METHOD
%define TRIPLE_METHOD 1
%endif

ROM_BEGIN
rom_entry:
        ROM_ENTER_STAGE stage_bsp_entry
ROM_END

STAGE_BEGIN
        STAGE_PM_ENTRY
[bits 32]
pm_main:
        call uart_init32
        PRINT32 msg_up
        PRINT32 msg_faulting
        call uart_drain32
        lidt [idt_zero]
%if TRIPLE_METHOD == 1
        ud2
%elif TRIPLE_METHOD == 2
        xor edx, edx
        xor ecx, ecx
        mov eax, 1
        div ecx
%elif TRIPLE_METHOD == 3
        int 0x80
%else
%error "unknown TRIPLE_METHOD"
%endif
        PRINT32 msg_fail
        call uart_drain32
        EXIT_WITH 1

        align 4
        dw 0
idt_zero:
        dw 0                            ; limit 0: every vector is out of bounds
        dd 0

msg_up:         db "triple: protected mode up", 13, 10, 0
%if TRIPLE_METHOD == 1
msg_faulting:   db "TRIPLE faulting via ud2", 13, 10, 0
%elif TRIPLE_METHOD == 2
msg_faulting:   db "TRIPLE faulting via div0", 13, 10, 0
%else
msg_faulting:   db "TRIPLE faulting via int80", 13, 10, 0
%endif
msg_fail:       db "FAIL triple no-shutdown", 13, 10, 0

%include "uart32.inc"
        STAGE_GDT
STAGE_END
