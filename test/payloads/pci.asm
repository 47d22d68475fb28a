; pci.asm - PCI configuration access from 32-bit protected mode.
;
; Output (values shown are the expected ones on tsbhyve with hostbridge at
; 00:00.0 and lpc at 00:01.0):
;   pci: protected mode up
;   CF8 80000000                      CONFIG_ADDRESS dword read-back
;   OK pci-cf8
;   FN 00.0 12378086                  every function on bus 0 whose vendor/device
;   FN 01.0 70008086                  dword (mechanism #1) is not all-ones:
;   FN 01.3 71138086                  slot.function, device<<16 | vendor
;   FOUND 00000003
;   OK pci-found                      (at least one function)
;   ECAMDIFF 00000000                 functions whose dword 0 through ECAM at
;   OK pci-ecam                       0xE0000000 differs from mechanism #1
;                                     (QEMU -machine pc has no ECAM: FAIL there)
;   HDR 80                            header type of 00:01.0 (multi-function)
;   PM1 0001                          PIIX4 PM at 00:01.3: PMBA <- 0xB001,
;   OK pci-pmba                       PMREGMISC <- 1, then PM1_CNT at 0xB004
;                                     must read 0001 (SCI_EN only; QEMU: 0000,
;                                     no PM function there: ffff)
;   DONE pci fails=00
; then exits with the failure count on port 0xF4.
%include "rom.inc"

%define ECAM_BASE       0xE0000000
%define PM_FN           ((1 << 3) | 3)          ; 00:01.3
%define PM_BASE         0xB000

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

        ; ---- CONFIG_ADDRESS reads back a dword -----------------------------------
        mov dx, 0xCF8
        mov eax, 0x80000000
        out dx, eax
        in eax, dx
        mov ebx, eax
        PRINT32 msg_cf8
        call hex32_32
        call crlf32
        cmp ebx, 0x80000000
        mov esi, str_cf8
        call report32

        ; ---- scan bus 0: 32 slots x 8 functions, both mechanisms --------------------
        xor ebp, ebp                    ; functions found
        xor edi, edi                    ; ECAM mismatches
        xor ecx, ecx                    ; devfn 0..255
.scan:  mov eax, ecx
        shl eax, 8
        or eax, 0x80000000
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        mov ebx, eax
        mov esi, ecx
        shl esi, 12
        add esi, ECAM_BASE
        cmp ebx, [esi]
        je .same
        inc edi
.same:  cmp ebx, 0xFFFFFFFF
        je .next
        inc ebp
        PRINT32 msg_fn
        mov eax, ecx
        shr eax, 3
        call hex8_32
        mov al, '.'
        call putc32
        mov eax, ecx
        and al, 7
        call hex4_32
        call space32
        mov eax, ebx
        call hex32_32
        call crlf32
.next:  inc ecx
        cmp ecx, 256
        jb .scan

        PRINT32 msg_found
        mov eax, ebp
        call hex32_32
        call crlf32
        xor eax, eax                    ; ZF=1 <=> ebp != 0
        test ebp, ebp
        jnz .found_ok
        inc eax
.found_ok:
        test eax, eax
        mov esi, str_found
        call report32

        PRINT32 msg_ecamdiff
        mov eax, edi
        call hex32_32
        call crlf32
        test edi, edi
        mov esi, str_ecam
        call report32

        ; ---- header type of 00:01.0 (byte 0x0E through CONFIG_DATA + 2) ---------------
        mov dx, 0xCF8
        mov eax, 0x80000000 | (1 << 11) | 0x0C
        out dx, eax
        mov dx, 0xCFE
        in al, dx
        PRINT32 msg_hdr
        call hex8_32
        call crlf32

        ; ---- PIIX4 PM: move the PM block to 0xB000 and enable it ---------------------
        mov dx, 0xCF8
        mov eax, 0x80000000 | (PM_FN << 8) | 0x40
        out dx, eax
        mov dx, 0xCFC
        mov eax, PM_BASE | 1
        out dx, eax
        mov dx, 0xCF8
        mov eax, 0x80000000 | (PM_FN << 8) | 0x80
        out dx, eax
        mov dx, 0xCFC
        mov al, 1
        out dx, al
        mov dx, PM_BASE + 4
        in ax, dx
        mov bx, ax
        PRINT32 msg_pm1
        call hex16_32
        call crlf32
        cmp bx, 1                       ; ZF=1 <=> only SCI_EN set (absent: ffff)
        mov esi, str_pmba
        call report32

        mov esi, str_name
        jmp finish32

msg_up:         db "pci: protected mode up", 13, 10, 0
msg_cf8:        db "CF8 ", 0
msg_fn:         db "FN ", 0
msg_found:      db "FOUND ", 0
msg_ecamdiff:   db "ECAMDIFF ", 0
msg_hdr:        db "HDR ", 0
msg_pm1:        db "PM1 ", 0
str_cf8:        db "pci-cf8", 0
str_found:      db "pci-found", 0
str_ecam:       db "pci-ecam", 0
str_pmba:       db "pci-pmba", 0
str_name:       db "pci", 0

%include "uart32.inc"
%include "report32.inc"
        STAGE_GDT
STAGE_END
