; uartirq.asm - interrupt-driven UART: IRQ4 through the 8259 PIC in real mode.
;
; Everything runs in real mode from a RAM copy of the stage (CS = 0), because
; real-mode IVT entries cannot point at the ROM near 4 GiB.  Steps:
;   1. polled:  "uartirq: start"
;      polled "LAPIC SVR 000001ff LVT0 00000700" after a protected-mode round
;      trip that software-enables the LAPIC and sets LINT0 = ExtINT
;   2. IVT (all vectors -> iret stub), PIC remapped to 0x08/0x70 with only
;      IRQ0 + IRQ4 unmasked, PIT channel 0 at ~100 Hz, sti.
;   3. waits for 3 timer ticks (timeout measured by polling the PIT counter
;      for wrap-arounds, so it works without interrupts):
;      polled "OK uartirq-timer-irq" or "FAIL uartirq-timer-irq" + exit.
;   4. MCR.OUT2, IER = RX data (+ THRE while the TX ring is non-empty); the
;      banner below is sent interrupt-driven, one byte per THRE interrupt:
;        "uartirq: interrupt-driven echo, send q to quit"
;      (timeout 3 s of ticks -> polled "FAIL uartirq-tx-irq" + exit)
;   5. every received byte is echoed (RX interrupt -> ring -> TX ring) until
;      a 'q' arrives; then "\r\nuartirq: got q" (interrupt-driven).
;      (30 s of ticks without input -> "FAIL uartirq-rx-timeout" + exit)
;   6. IER = 0, cli, polled:
;        "IRQ4 xxxx THREI xxxx RXI xxxx RXCHARS xxxx" (hex counters)
;        "OK uartirq"
;        "DONE uartirq fails=00"
;      and exits with 0 on port 0xF4 (1 on the FAIL paths above).
%include "rom.inc"

%define PIT_DIVISOR     11932           ; 1193182 Hz / 11932 ~ 100 Hz
%define RX_BUF          0x5000          ; 256-byte rings, indices wrap as bytes
%define TX_BUF          0x5100
%define TX_TIMEOUT      300             ; ticks
%define RX_TIMEOUT      3000            ; ticks
%define TIMER_WRAPS     100             ; PIT wrap-arounds (~1 s) to see 3 ticks
%define IER_RX          0x01
%define IER_RX_TX       0x03

ROM_BEGIN
rom_entry:
        ROM_ENTER_STAGE uartirq_main
ROM_END

STAGE_BEGIN
[bits 16]
uartirq_main:                           ; CS = DS = ES = SS = 0, SP = RM_STACK, IF = 0
        call uart_init16
        mov si, msg_start
        call puts16

        ; ---- LAPIC: software-enable, LINT0 = ExtINT, LINT1 = NMI -----------------
        ; KVM resets the BSP's LVT0 to ExtINT (LINT0_REENABLED quirk) but QEMU
        ; TCG leaves it masked (SeaBIOS programs it), and a masked LINT0 on an
        ; enabled LAPIC blocks every 8259 interrupt.  Real mode cannot reach
        ; 0xFEE00000, so do a short protected-mode round trip.
        call lapic_extint
        mov si, msg_lapic_svr
        call puts16
        mov eax, [lapic_svr]
        call hex32_16
        mov si, msg_lapic_lvt0
        call puts16
        mov eax, [lapic_lvt0]
        call hex32_16
        call crlf16

        ; ---- IVT: every vector -> iret stub; IRQ0 (0x08) and IRQ4 (0x0C) ----
        xor di, di
        mov cx, 256
.ivt:   mov word [di], default_isr
        mov word [di + 2], 0
        add di, 4
        dec cx
        jnz .ivt
        mov word [0x08 * 4], irq0_isr
        mov word [0x0C * 4], irq4_isr

        ; ---- 8259s: ICW1..ICW4, master base 0x08, slave base 0x70 -----------
        mov al, 0x11
        out 0x20, al
        out 0xA0, al
        mov al, 0x08
        out 0x21, al
        mov al, 0x70
        out 0xA1, al
        mov al, 0x04
        out 0x21, al
        mov al, 0x02
        out 0xA1, al
        mov al, 0x01
        out 0x21, al
        out 0xA1, al
        mov al, 0xEE                    ; unmask IRQ0 and IRQ4
        out 0x21, al
        mov al, 0xFF
        out 0xA1, al

        ; ---- PIT channel 0: mode 2, lobyte/hibyte --------------------------------
        mov al, 0x34
        out 0x43, al
        mov ax, PIT_DIVISOR
        out 0x40, al
        mov al, ah
        out 0x40, al
        sti

        ; ---- wait for 3 ticks; timeout counts PIT wrap-arounds -------------------
        xor bp, bp                      ; wraps seen
        mov edi, 0x00200000             ; last-resort spin bound
        call pit_read
        mov bx, ax
.tick_wait:
        cmp word [ticks], 3
        jae .timer_ok
        dec edi
        jz .timer_fail
        call pit_read
        cmp ax, bx                      ; counts down: a larger value means it wrapped
        mov bx, ax
        jbe .tick_wait
        inc bp
        cmp bp, TIMER_WRAPS
        jb .tick_wait
.timer_fail:
        mov si, str_timer
        jmp fail_exit
.timer_ok:
        mov si, msg_ok
        call puts16
        mov si, str_timer
        call puts16
        call crlf16
        call uart_drain16

        ; ---- UART interrupts on ------------------------------------------------------
        mov dx, COM1 + 4
        mov al, 0x0B                    ; DTR | RTS | OUT2 (OUT2 gates the IRQ line on PCs)
        out dx, al
        mov dx, COM1 + 1
        mov al, IER_RX
        out dx, al
        mov si, msg_banner
        call tx_puts
        mov si, str_tx
        call tx_wait_drained

        ; ---- echo until 'q' -------------------------------------------------------------
.echo_reset_deadline:
        mov ax, [ticks]
        add ax, RX_TIMEOUT
        mov [deadline], ax
.echo:  cli
        mov bl, [rx_tail]
        cmp bl, [rx_head]
        jne .got
        mov ax, [ticks]
        cmp ax, [deadline]
        jae .rx_timeout
        sti
        hlt
        jmp .echo
.got:   movzx bx, bl
        mov al, [RX_BUF + bx]
        inc byte [rx_tail]
        sti
        inc word [rx_chars]
        call tx_putc
        cmp al, 'q'
        jne .echo_reset_deadline

        mov si, msg_bye
        call tx_puts
        mov si, str_tx
        call tx_wait_drained

        ; ---- back to polled output: statistics ------------------------------------------
        cli
        mov dx, COM1 + 1
        xor al, al
        out dx, al                      ; IER = 0
        mov si, msg_irq4
        call puts16
        mov ax, [irq4_count]
        call hex16_16
        mov si, msg_threi
        call puts16
        mov ax, [threi_count]
        call hex16_16
        mov si, msg_rxi
        call puts16
        mov ax, [rxi_count]
        call hex16_16
        mov si, msg_rxchars
        call puts16
        mov ax, [rx_chars]
        call hex16_16
        call crlf16
        mov si, msg_ok
        call puts16
        mov si, str_name
        call puts16
        call crlf16
        mov si, msg_done
        call puts16
        call uart_drain16
        EXIT_WITH 0

.rx_timeout:
        mov si, str_rx
        jmp fail_exit

; fail_exit - CS:SI = check name: IER = 0, polled "FAIL <name>", exit 1.
fail_exit:
        cli
        mov dx, COM1 + 1
        xor al, al
        out dx, al
        call crlf16
        push si
        mov si, msg_fail
        call puts16
        pop si
        call puts16
        call crlf16
        mov si, msg_done_fail
        call puts16
        call uart_drain16
        EXIT_WITH 1

; tx_wait_drained - sleep (sti; hlt) until the ISR has sent everything and
; turned THRE interrupts off; after TX_TIMEOUT ticks: fail_exit with CS:SI.
tx_wait_drained:
        mov ax, [ticks]
        add ax, TX_TIMEOUT
        mov [deadline], ax
.wait:  cli
        cmp byte [tx_busy], 0
        je .done
        mov ax, [ticks]
        cmp ax, [deadline]
        jae fail_exit
        sti
        hlt
        jmp .wait
.done:  sti
        ret

; tx_puts - queue the NUL-terminated string at CS:SI.
tx_puts:
        push ax
        push si
.next:  mov al, [cs:si]
        inc si
        test al, al
        jz .done
        call tx_putc
        jmp .next
.done:  pop si
        pop ax
        ret

; tx_putc - queue AL for interrupt-driven transmission (sleeps while the ring
; is full); turns THRE interrupts on when the transmitter was idle.  Returns
; with interrupts enabled.
tx_putc:
        push ax
        push bx
        push dx
.full:  cli
        mov bl, [tx_head]
        inc bl
        cmp bl, [tx_tail]
        jne .room
        sti
        hlt
        jmp .full
.room:  movzx bx, byte [tx_head]
        mov [TX_BUF + bx], al
        inc byte [tx_head]
        cmp byte [tx_busy], 0
        jne .out
        mov byte [tx_busy], 1
        mov dx, COM1 + 1
        mov al, IER_RX_TX               ; THR is empty -> THRE interrupt right away
        out dx, al
.out:   sti
        pop dx
        pop bx
        pop ax
        ret

; lapic_extint - real mode -> 32-bit PM: SVR = 0x1FF, LVT0 = 0x700 (ExtINT),
; LVT1 = 0x400 (NMI), read SVR/LVT0 back into lapic_svr/lapic_lvt0 -> 16-bit PM
; -> real mode.  Interrupts must be off; leaves DS = ES = SS = 0.
lapic_extint:
        cli
        o32 lgdt [gdt_desc]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp dword 0x08:lapic_extint_pm32
[bits 32]
lapic_extint_pm32:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov dword [LAPIC_BASE + 0xF0], 0x1FF
        mov dword [LAPIC_BASE + 0x350], 0x700
        mov dword [LAPIC_BASE + 0x360], 0x400
        mov eax, [LAPIC_BASE + 0xF0]
        mov [lapic_svr], eax
        mov eax, [LAPIC_BASE + 0x350]
        mov [lapic_lvt0], eax
        jmp 0x18:lapic_extint_pm16
[bits 16]
lapic_extint_pm16:
        mov ax, 0x20
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov eax, cr0
        and al, 0xFE
        mov cr0, eax
        jmp 0x0000:lapic_extint_rm
lapic_extint_rm:
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        ret

; pit_read - AX = latched PIT channel 0 count.
pit_read:
        mov al, 0x00                    ; counter latch, channel 0
        out 0x43, al
        in al, 0x40
        mov ah, al
        in al, 0x40
        xchg al, ah
        ret

; ---------------------------------------------------------------- ISRs --
default_isr:
        iret

irq0_isr:
        push ax
        inc word [cs:ticks]
        mov al, 0x20
        out 0x20, al
        pop ax
        iret

irq4_isr:
        push ax
        push bx
        push cx
        push dx
        push ds
        xor ax, ax
        mov ds, ax
        inc word [irq4_count]
        mov cx, 64                      ; bound on IIR/LSR polling per interrupt
.next:  mov dx, COM1 + 2
        in al, dx                       ; IIR
        test al, 0x01
        jnz .eoi                        ; nothing (more) pending
        and al, 0x0E
        cmp al, 0x02
        je .thre
        cmp al, 0x04
        je .rx
        cmp al, 0x0C
        je .rx                          ; character timeout (FIFO mode)
        cmp al, 0x06
        je .lsr
        mov dx, COM1 + 6                ; modem status: read MSR to clear
        in al, dx
        jmp .again
.lsr:   mov dx, COM1 + 5                ; line status: read LSR to clear
        in al, dx
        jmp .again
.rx:    inc word [rxi_count]
.rx_more:
        mov dx, COM1 + 5
        in al, dx
        test al, 0x01                   ; LSR.DR
        jz .again
        mov dx, COM1
        in al, dx                       ; RBR
        movzx bx, byte [rx_head]
        mov ah, bl
        inc ah
        cmp ah, [rx_tail]
        je .rx_drop                     ; ring full: drop
        mov [RX_BUF + bx], al
        mov [rx_head], ah
.rx_drop:
        dec cx
        jnz .rx_more
        jmp .eoi
.thre:  inc word [threi_count]
        mov bl, [tx_tail]
        cmp bl, [tx_head]
        je .tx_idle
        movzx bx, bl
        mov al, [TX_BUF + bx]
        inc byte [tx_tail]
        mov dx, COM1
        out dx, al
        jmp .again
.tx_idle:
        mov byte [tx_busy], 0
        mov dx, COM1 + 1
        mov al, IER_RX                  ; ring empty: THRE interrupts off
        out dx, al
.again: dec cx
        jnz .next
.eoi:   mov al, 0x20
        out 0x20, al
        pop ds
        pop dx
        pop cx
        pop bx
        pop ax
        iret

msg_start:      db "uartirq: start", 13, 10, 0
msg_lapic_svr:  db "LAPIC SVR ", 0
msg_lapic_lvt0: db " LVT0 ", 0
msg_banner:     db "uartirq: interrupt-driven echo, send q to quit", 13, 10, 0
msg_bye:        db 13, 10, "uartirq: got q", 13, 10, 0
msg_irq4:       db "IRQ4 ", 0
msg_threi:      db " THREI ", 0
msg_rxi:        db " RXI ", 0
msg_rxchars:    db " RXCHARS ", 0
msg_ok:         db "OK ", 0
msg_fail:       db "FAIL ", 0
msg_done:       db "DONE uartirq fails=00", 13, 10, 0
msg_done_fail:  db "DONE uartirq fails=01", 13, 10, 0
str_timer:      db "uartirq-timer-irq", 0
str_tx:         db "uartirq-tx-irq", 0
str_rx:         db "uartirq-rx-timeout", 0
str_name:       db "uartirq", 0
        align 4
lapic_svr:      dd 0
lapic_lvt0:     dd 0
ticks:          dw 0
deadline:       dw 0
irq4_count:     dw 0
threi_count:    dw 0
rxi_count:      dw 0
rx_chars:       dw 0
rx_head:        db 0
rx_tail:        db 0
tx_head:        db 0
tx_tail:        db 0
tx_busy:        db 0

%include "uart16.inc"
        STAGE_GDT
STAGE_END
