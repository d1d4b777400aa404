// The vector unit's Requant lane pipeline (two register stages), one accumulator row per cycle:
//   out = clamp(round_half_away((acc + bias) * mult / 2^shift) + zero_point, lo, hi)
// exactly as the ISA's `numeric::requant_lane`: the bias add wraps in 32 bits, the product is
// exact in 64 bits, shift lanes are read unsigned and clamped to MAX_SHIFT, and the rounding is
// (p + 2^(s-1) - (p < 0)) >>> s. The ISA saturates to int32 before adding the zero point and
// clamping to [lo, hi]; since [lo, hi] lies inside int8, clamping the exact 64-bit value gives the
// same result, so no separate saturation stage is needed. max with lo comes before min with hi,
// so lo > hi yields hi.
module sinter_requant #(
  parameter int unsigned COLS = sinter_isa_pkg::DEFAULT_COLS
) (
  input  logic               clk_i,
  input  logic               rst_ni,
  input  logic               flush_i,
  input  logic               valid_i,
  input  logic [15:0]        dst_i,
  input  logic [COLS*32-1:0] acc_i,
  input  logic [COLS*32-1:0] bias_i,
  input  logic [COLS*32-1:0] mult_i,
  input  logic [COLS*32-1:0] shift_i,
  input  logic [7:0]         zp_i,
  input  logic [7:0]         lo_i,
  input  logic [7:0]         hi_i,
  output logic               valid_o,
  output logic [15:0]        dst_o,
  output logic [COLS*8-1:0]  data_o,
  output logic               busy_o
);
  localparam logic [5:0] MAX_SHIFT = 6'(sinter_isa_pkg::MAX_SHIFT);

  logic              a_valid_q;
  logic [15:0]       a_dst_q;
  logic [COLS*64-1:0] a_prod_q;
  logic [COLS*6-1:0]  a_sh_q;

  for (genvar c = 0; c < COLS; c++) begin : g_lane
    // stage A: bias add, exact product, shift clamp
    logic [31:0] sum, shift;
    logic [63:0] prod;
    logic [5:0]  sh;
    assign sum   = acc_i[c*32 +: 32] + bias_i[c*32 +: 32];
    assign prod  = {{32{sum[31]}}, sum} * {{32{mult_i[c*32+31]}}, mult_i[c*32 +: 32]};
    assign shift = shift_i[c*32 +: 32];
    assign sh    = (shift > 32'(MAX_SHIFT)) ? MAX_SHIFT : shift[5:0];
    always_ff @(posedge clk_i) begin
      if (valid_i) begin
        a_prod_q[c*64 +: 64] <= prod;
        a_sh_q[c*6 +: 6]     <= sh;
      end
    end

    // stage B: rounding shift, zero point, clamp
    logic [63:0] p, rbias, rounded, v, lo, hi, y;
    logic [5:0]  s;
    assign p       = a_prod_q[c*64 +: 64];
    assign s       = a_sh_q[c*6 +: 6];
    assign rbias   = (s == 6'd0) ? 64'd0 : (64'd1 << (s - 6'd1)) - {63'd0, p[63]};
    assign rounded = 64'($signed(p + rbias) >>> s);
    assign v       = rounded + {{56{zp_i[7]}}, zp_i};
    assign lo      = {{56{lo_i[7]}}, lo_i};
    assign hi      = {{56{hi_i[7]}}, hi_i};
    always_comb begin
      y = ($signed(v) < $signed(lo)) ? lo : v;
      y = ($signed(y) > $signed(hi)) ? hi : y;
    end
    always_ff @(posedge clk_i) begin
      if (a_valid_q) data_o[c*8 +: 8] <= y[7:0];
    end

    logic unused_lane;
    assign unused_lane = ^y[63:8];
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || flush_i) begin
      a_valid_q <= 1'b0;
      valid_o   <= 1'b0;
    end else begin
      a_valid_q <= valid_i;
      valid_o   <= a_valid_q;
    end
  end

  always_ff @(posedge clk_i) begin
    if (valid_i)   a_dst_q <= dst_i;
    if (a_valid_q) dst_o   <= a_dst_q;
  end

  assign busy_o = a_valid_q || valid_o;
endmodule
