; smp.asm - wake the AP with INIT-SIPI-SIPI, hammer the test-device counter
; from both vCPUs, check the total.
;
; The BSP copies the stage (whose first byte is the AP entry) to 0x7000,
; enters 32-bit protected mode, enables its LAPIC, sends INIT then two SIPIs
; (vector 0x07 -> AP starts in real mode at 0700:0000) to APIC id 1.  The AP
; runs the same real->protected switch from the stage.  Each CPU then does
; SMP_ITERS x `out 0xE0, al` (al = 1).  Printing is serialised by a spinlock
; taken with `xchg` (implicitly locked; no cmpxchg).
;
; Output (line order between CPUs may vary, except as noted):
;   smp: BSP in protected mode
;   CPU0 up                           (n = LAPIC id from 0xFEE00020)
;   CPU1 up
;   CPU0 done
;   CPU1 done
;   COUNT 00009c40 EXPECT 00009c40    after both "done" lines (hex, 2*SMP_ITERS)
;   OK smp-count                      (QEMU has no counter: COUNT ffffffff, FAIL)
;   DONE smp fails=00
; then exits with the failure count on port 0xF4.  If the AP never reports
; "up" the BSP prints "FAIL smp-ap-timeout" and finishes without waiting.
%include "rom.inc"

%ifndef SMP_ITERS
%define SMP_ITERS       20000           ; increments per CPU
%endif
%define AP_APIC_ID      1
%define AP_UP_SPINS     0x01000000      ; bounded wait for "AP up" (after BSP's own loop)

ROM_BEGIN
rom_entry:
        ROM_ENTER_STAGE stage_bsp_entry
ROM_END

STAGE_BEGIN
        STAGE_PM_ENTRY                  ; must stay first: SIPI vector 0x07 -> 0x7000
[bits 32]
pm_main:
        test ebx, ebx
        jnz ap_main

; ------------------------------------------------------------------- BSP --
        call uart_init32
        PRINT32 msg_bsp
        call print_up

        mov dword [LAPIC_BASE + 0xF0], 0x1FF    ; SVR: APIC software-enable, spurious 0xFF
        ; INIT (assert) to APIC id 1
        mov dword [LAPIC_BASE + 0x310], AP_APIC_ID << 24
        mov dword [LAPIC_BASE + 0x300], 0x00004500
        call icr_wait
        call delay
        ; SIPI x2, vector = STAGE_BASE >> 12
        mov dword [LAPIC_BASE + 0x310], AP_APIC_ID << 24
        mov dword [LAPIC_BASE + 0x300], 0x00004600 | (STAGE_BASE >> 12)
        call icr_wait
        call delay
        mov dword [LAPIC_BASE + 0x310], AP_APIC_ID << 24
        mov dword [LAPIC_BASE + 0x300], 0x00004600 | (STAGE_BASE >> 12)
        call icr_wait

        call count_loop
        mov esi, msg_done
        call locked_cpu_line

        ; wait (bounded) for the AP to come up, then (unbounded) for it to finish
        mov ecx, AP_UP_SPINS
.wait_up:
        cmp dword [ap_up], 0
        jne .wait_done
        dec ecx
        jnz .wait_up
        call lock_acquire
        mov esi, str_ap_timeout
        or eax, 1                       ; ZF = 0 -> FAIL
        call report32
        call lock_release
        mov esi, str_name
        jmp finish32
.wait_done:
        cmp dword [ap_done], 0
        je .wait_done

        in eax, TESTDEV_COUNTER         ; 4-byte read of the counter
        mov ebx, eax
        PRINT32 msg_count
        call hex32_32
        PRINT32 msg_expect
        mov eax, 2 * SMP_ITERS
        call hex32_32
        call crlf32
        cmp ebx, 2 * SMP_ITERS
        mov esi, str_count
        call report32
        mov esi, str_name
        jmp finish32

; -------------------------------------------------------------------- AP --
ap_main:
        call print_up
        mov dword [ap_up], 1
        call count_loop
        mov esi, msg_done
        call locked_cpu_line
        mov dword [ap_done], 1
.halt:  cli
        hlt
        jmp .halt

; ---------------------------------------------------------------- helpers --
count_loop:
        mov ecx, SMP_ITERS
        mov al, 1
.loop:  out TESTDEV_COUNTER, al
        dec ecx
        jnz .loop
        ret

print_up:
        mov esi, msg_up
        ; fall through
; locked_cpu_line - under the print lock: "CPU<lapic id><ESI>\r\n".
locked_cpu_line:
        call lock_acquire
        PRINT32 msg_cpu
        mov eax, [LAPIC_BASE + 0x20]
        shr eax, 24
        call print_dec8
        call puts32
        call crlf32
        call lock_release
        ret

; print_dec8 - AL (0..255) in decimal, no leading zeros.
print_dec8:
        push eax
        push ebx
        push ecx
        push edx
        movzx eax, al
        mov ebx, 10
        xor ecx, ecx                    ; digit count
.div:   xor edx, edx
        div ebx
        push edx                        ; remainder = next digit (reversed)
        inc ecx
        test eax, eax
        jnz .div
.out:   pop eax
        add al, '0'
        call putc32
        dec ecx
        jnz .out
        pop edx
        pop ecx
        pop ebx
        pop eax
        ret

lock_acquire:
        push eax
.spin:  mov eax, 1
        xchg eax, [print_lock]
        test eax, eax
        jnz .spin
        pop eax
        ret

lock_release:
        mov dword [print_lock], 0
        ret

; icr_wait - wait (bounded) for ICR delivery status (bit 12) to clear.
icr_wait:
        push ecx
        mov ecx, 0x100000
.poll:  test dword [LAPIC_BASE + 0x300], 0x1000
        jz .idle
        dec ecx
        jnz .poll
.idle:  pop ecx
        ret

delay:
        push ecx
        mov ecx, 20000
.d:     dec ecx
        jnz .d
        pop ecx
        ret

msg_bsp:        db "smp: BSP in protected mode", 13, 10, 0
msg_cpu:        db "CPU", 0
msg_up:         db " up", 0
msg_done:       db " done", 0
msg_count:      db "COUNT ", 0
msg_expect:     db " EXPECT ", 0
str_count:      db "smp-count", 0
str_ap_timeout: db "smp-ap-timeout", 0
str_name:       db "smp", 0
        align 4
print_lock:     dd 0
ap_up:          dd 0
ap_done:        dd 0

%include "uart32.inc"
%include "report32.inc"
        STAGE_GDT
STAGE_END
