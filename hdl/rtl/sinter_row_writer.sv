// Turns DMA writes into buffer-row writes. An element no wider than a beat sits at byte offset
// `off_i` of its beat and fills the whole row; a wider element arrives as consecutive beats, each
// filling one chunk of the row. A pad write fills every chunk with the pad byte.
module sinter_row_writer #(
  parameter int unsigned ELEM_BYTES = 16,
  parameter int unsigned BUS_BYTES  = 32,
  parameter int unsigned AW         = 11,
  parameter int unsigned BW         = 8,
  parameter int unsigned LB         = $clog2(BUS_BYTES),
  parameter int unsigned NCHUNK     = (ELEM_BYTES > BUS_BYTES) ? ELEM_BYTES / BUS_BYTES : 1
) (
  input  logic                    valid_i,
  input  logic [15:0]             row_i,
  input  logic [BW-1:0]           beat_i,
  input  logic [LB-1:0]           off_i,
  input  logic [BUS_BYTES*8-1:0]  data_i,
  input  logic                    pad_i,
  input  logic [7:0]              pad_byte_i,
  output logic                    we_o,
  output logic [AW-1:0]           waddr_o,
  output logic [ELEM_BYTES*8-1:0] wdata_o,
  output logic [NCHUNK-1:0]       wchunk_o
);
  localparam int unsigned EW = ELEM_BYTES * 8;

  assign we_o    = valid_i;
  assign waddr_o = row_i[AW-1:0];

  logic [EW-1:0] beat_row;
  if (ELEM_BYTES <= BUS_BYTES) begin : g_narrow
    logic [BUS_BYTES*8-1:0] shifted;
    assign shifted  = data_i >> {off_i, 3'b000};
    assign beat_row = shifted[EW-1:0];
    assign wchunk_o = '1;
    logic unused_narrow;
    assign unused_narrow = ^{beat_i, shifted};
  end else begin : g_wide
    assign beat_row = {NCHUNK{data_i}};
    assign wchunk_o = pad_i ? '1 : NCHUNK'(1) << beat_i;
    logic unused_wide;
    assign unused_wide = ^off_i;
  end

  assign wdata_o = pad_i ? {ELEM_BYTES{pad_byte_i}} : beat_row;

  logic unused_row;
  assign unused_row = ^row_i;
endmodule
