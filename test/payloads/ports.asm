; ports.asm - port I/O round trips, real mode, runs from the ROM.
;
; Output (values shown are the expected ones):
;   ports: start
;   PORT300 ff ffff ffffffff          byte/word/dword reads of unassigned port 0x300
;   PORT300W ff ffff ffffffff         same after byte/word/dword writes to it
;   OK ports-unassigned               (or FAIL ports-unassigned)
;   SCR 5a a5 00 ff                   UART scratch register 0x3FF write/read round trips
;   OK ports-scratch
;   LCR 03 MCR 03                     UART LCR / MCR read back after uart_init16
;   OK ports-lcr-mcr
;   LSR 60                            UART LSR after draining TX (THRE|TEMT)
;   OK ports-lsr                      (needs THRE set and LSR != ff)
;   IIR c1                            informational: no interrupt pending (+ FIFO bits)
;   DONE ports fails=00
; then writes the failure count to port 0xF4 (exit) and halts.
%include "rom.inc"

ROM_BEGIN
rom_entry:
        cli
        cld
        xor ax, ax
        mov ds, ax
        mov ss, ax
        mov sp, RM_STACK
        xor bp, bp                      ; BP = failure count
        call uart_init16
        mov si, msg_start
        call puts16

        ; ---- unassigned port: reads return all-ones --------------------
        mov si, msg_port300
        call puts16
        call read300                    ; EDI = accumulated AND of the values
        call crlf16
        mov dx, 0x300                   ; writes must be ignored
        mov al, 0x12
        out dx, al
        mov ax, 0x3456
        out dx, ax
        mov eax, 0x789ABCDE
        out dx, eax
        mov si, msg_port300w
        call puts16
        push edi
        call read300
        pop eax
        and edi, eax
        call crlf16
        cmp edi, 0xFFFFFFFF
        mov si, str_unassigned
        call report

        ; ---- UART scratch register round trip -----------------------------
        mov si, msg_scr
        call puts16
        xor di, di                      ; DI = mismatch count
        mov bl, 0x5A
        call scratch_rt
        mov bl, 0xA5
        call scratch_rt
        mov bl, 0x00
        call scratch_rt
        mov bl, 0xFF
        call scratch_rt
        call crlf16
        cmp di, 0
        mov si, str_scratch
        call report

        ; ---- LCR / MCR read back ------------------------------------------
        mov si, msg_lcr
        call puts16
        mov dx, COM1 + 3
        in al, dx
        mov bl, al
        call hex8_16
        mov si, msg_mcr
        call puts16
        mov dx, COM1 + 4
        in al, dx
        mov bh, al
        call hex8_16
        call crlf16
        cmp bx, 0x0303
        mov si, str_lcr_mcr
        call report

        ; ---- LSR after draining ------------------------------------------------
        call uart_drain16
        mov dx, COM1 + 5
        in al, dx
        mov bl, al
        mov si, msg_lsr
        call puts16
        mov al, bl
        call hex8_16
        call crlf16
        xor ax, ax                      ; ZF=1 <=> (LSR & 0x20) && LSR != 0xFF
        test bl, 0x20
        jz .lsr_bad
        cmp bl, 0xFF
        jne .lsr_eval
.lsr_bad:
        inc ax
.lsr_eval:
        test ax, ax
        mov si, str_lsr
        call report

        ; ---- IIR (informational) ------------------------------------------------
        mov si, msg_iir
        call puts16
        mov dx, COM1 + 2
        in al, dx
        call hex8_16
        call crlf16

        mov si, msg_done
        call puts16
        mov ax, bp
        call hex8_16
        call crlf16
        call uart_drain16
        mov ax, bp
        EXIT_WITH al

; read300 - print "bb wwww dddddddd" for byte/word/dword reads of port 0x300;
; EDI = (zero-extended byte | 0xFFFFFF00) & (word | 0xFFFF0000) & dword.
read300:
        mov dx, 0x300
        in al, dx
        movzx edi, al
        or edi, 0xFFFFFF00
        call hex8_16
        call space16
        in ax, dx
        movzx eax, ax
        or eax, 0xFFFF0000
        and edi, eax
        call hex16_16
        call space16
        in eax, dx
        and edi, eax
        call hex32_16
        ret

; scratch_rt - write BL to the scratch register, read it back, print it;
; DI += 1 on mismatch.
scratch_rt:
        mov dx, COM1 + 7
        mov al, bl
        out dx, al
        in al, dx
        call space16
        call hex8_16
        cmp al, bl
        je .ok
        inc di
.ok:    ret

; report - ZF set: print "OK <CS:SI>", else "FAIL <CS:SI>" and BP += 1.
report:
        push si
        jnz .fail
        mov si, msg_ok
        call puts16
        jmp .name
.fail:  inc bp
        mov si, msg_fail
        call puts16
.name:  pop si
        call puts16
        call crlf16
        ret

msg_start:      db "ports: start", 13, 10, 0
msg_port300:    db "PORT300 ", 0
msg_port300w:   db "PORT300W ", 0
msg_scr:        db "SCR", 0
msg_lcr:        db "LCR ", 0
msg_mcr:        db " MCR ", 0
msg_lsr:        db "LSR ", 0
msg_iir:        db "IIR ", 0
msg_done:       db "DONE ports fails=", 0
msg_ok:         db "OK ", 0
msg_fail:       db "FAIL ", 0
str_unassigned: db "ports-unassigned", 0
str_scratch:    db "ports-scratch", 0
str_lcr_mcr:    db "ports-lcr-mcr", 0
str_lsr:        db "ports-lsr", 0

%include "uart16.inc"
ROM_END
