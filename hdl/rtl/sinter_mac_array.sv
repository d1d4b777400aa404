// The ROWS x COLS multiply-accumulate array: lane c of the result is
// sum_r act[r] * W[r][c] in int32 (wrapping), with W[r][c] at byte r*COLS + c of the weight tile
// and act[r] at byte r of the activation row. Purely combinational; the compute module registers
// around it.
module sinter_mac_array #(
  parameter int unsigned ROWS = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS = sinter_isa_pkg::DEFAULT_COLS
) (
  input  logic [ROWS*8-1:0]      act_i,
  input  logic [ROWS*COLS*8-1:0] wgt_i,
  output logic [COLS*32-1:0]     dot_o
);
  for (genvar c = 0; c < COLS; c++) begin : g_col
    logic [31:0] sum;
    logic [15:0] prod;
    always_comb begin
      sum  = '0;
      prod = '0;
      for (int r = 0; r < ROWS; r++) begin
        // Sign-extend both int8 operands; the low 16 bits of the product are the exact
        // signed product.
        prod = {{8{act_i[r*8+7]}}, act_i[r*8 +: 8]} *
               {{8{wgt_i[(r*COLS+c)*8+7]}}, wgt_i[(r*COLS+c)*8 +: 8]};
        sum  = sum + {{16{prod[15]}}, prod};
      end
    end
    assign dot_o[c*32 +: 32] = sum;
  end
endmodule
