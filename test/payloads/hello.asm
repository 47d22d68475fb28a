; hello.asm - smallest payload: real mode only, runs straight from the ROM.
; Prints "hello from tsbhyve payload\r\n" on COM1, then cli; hlt forever.
%include "rom.inc"

ROM_BEGIN
rom_entry:
        cli
        cld
        xor ax, ax
        mov ss, ax
        mov sp, RM_STACK
        call uart_init16
        mov si, msg_hello
        call puts16
        call uart_drain16
.halt:  cli
        hlt
        jmp .halt

msg_hello: db "hello from tsbhyve payload", 13, 10, 0

%include "uart16.inc"
ROM_END
