; tripleint.asm - triple.asm variant: software `int 0x80` beyond the IDT limit.
%define TRIPLE_METHOD 3
%include "triple.asm"
