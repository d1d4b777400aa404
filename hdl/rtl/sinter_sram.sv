// On-chip buffer: one write port with per-chunk enables (a DMA beat fills one chunk of a wide
// row), one synchronous read port (data one cycle after the address). A read in the same cycle as
// a write to the same row returns the old contents; the GEMM pipeline forwards around that.
// Each chunk is its own memory in the plain template that Yosys maps to block RAM.
module sinter_sram #(
  parameter int unsigned WIDTH  = 64,
  parameter int unsigned DEPTH  = 256,
  parameter int unsigned NCHUNK = 1,
  parameter int unsigned AW     = $clog2(DEPTH)
) (
  input  logic              clk_i,
  input  logic              we_i,
  input  logic [AW-1:0]     waddr_i,
  input  logic [WIDTH-1:0]  wdata_i,
  input  logic [NCHUNK-1:0] wchunk_i,
  input  logic              re_i,
  input  logic [AW-1:0]     raddr_i,
  output logic [WIDTH-1:0]  rdata_o
);
  localparam int unsigned CWIDTH = WIDTH / NCHUNK;

  for (genvar c = 0; c < NCHUNK; c++) begin : g_chunk
    logic [CWIDTH-1:0] mem [0:DEPTH-1];

    always_ff @(posedge clk_i) begin
      if (we_i && wchunk_i[c]) begin
        mem[waddr_i] <= wdata_i[c*CWIDTH +: CWIDTH];
      end
    end

    always_ff @(posedge clk_i) begin
      if (re_i) begin
        rdata_o[c*CWIDTH +: CWIDTH] <= mem[raddr_i];
      end
    end
  end
endmodule
